"""Distributed training on Kubernetes (manifests/base/trainer-workers.yaml): the indexed Job
the trainer makes from the PodTemplate trainer-worker validates against the Kubernetes schema
and is locked down like every pod; the trainer's Role allows those Jobs and nothing else; the
workers reach each other and nothing else in the namespace."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from services.trainer.kubernetes_workers import (
    POD_TEMPLATE,
    RENDEZVOUS_PORT,
    SERVICE,
    job_name,
    render_job,
)
from tests.support.manifests import (
    DNS,
    KUBERNETES_VERSIONS,
    OVERLAYS,
    assert_locked_down,
    find,
    pod_spec,
    policy_rules,
    selects,
)
from tests.support.tools import check, find_tool

WORKER = {"app.kubernetes.io/name": "trainer-worker"}
STORE = {"RECSYS_TRAINER_SNAPSHOT_URI": "s3://snapshots/trainer",
         "RECSYS_TRAINER_S3_ENDPOINT": "https://s3.example.internal",
         "RECSYS_TRAINER_S3_REGION": "eu-west-1"}


def worker_job(objects: list[dict[str, Any]], workers: int = 4) -> dict[str, Any]:
    return render_job(find(objects, "PodTemplate", POD_TEMPLATE),
                      name=job_name("20261203-101500-3fa2c1"), workers=workers,
                      run="runs/20261203-101500-3fa2c1", environ=STORE)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_workers_job_validates_and_is_locked_down(
        objects: dict[str, list[dict[str, Any]]], overlay: str, tmp_path: Path) -> None:
    job = worker_job(objects[overlay])
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    validate = find_tool("kubernetes-validate", "PyPI kubernetes-validate")
    for version in KUBERNETES_VERSIONS:
        check([validate, "--strict", "--quiet", "--kubernetes-version", version, str(path)])
    spec = pod_spec(job)
    assert_locked_down(f"Job/{job['metadata']['name']}", spec)
    assert spec["serviceAccountName"] == "trainer-worker"
    assert job["spec"]["backoffLimit"] == 0  # the first worker that fails fails the Job
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == 4
    assert job["spec"]["template"]["metadata"]["labels"].items() >= WORKER.items()
    # Pod 0 is the rendezvous, by the name the headless Service gives it.
    service = find(objects[overlay], "Service", SERVICE)["spec"]
    assert spec["subdomain"] == SERVICE
    assert service["clusterIP"] == "None" and service["publishNotReadyAddresses"] is True
    assert selects({"matchLabels": service["selector"]},
                   job["spec"]["template"]["metadata"]["labels"])
    args = spec["containers"][0]["args"]
    assert args[args.index("--master-addr") + 1] == f"{job['metadata']['name']}-0.{SERVICE}"
    assert args[args.index("--master-port") + 1] == str(RENDEZVOUS_PORT)
    # The store's keys come from a Secret, never as a literal in the Job.
    env = {e["name"]: e for e in spec["containers"][0]["env"]}
    for key in ("RECSYS_TRAINER_S3_ACCESS_KEY", "RECSYS_TRAINER_S3_SECRET_KEY"):
        assert "value" not in env[key] and env[key]["valueFrom"]["secretKeyRef"]
    assert {name: env[name]["value"] for name in STORE} == STORE


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_trainers_role_allows_its_workers_jobs_and_nothing_else(
        objects: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    role = find(objects[overlay], "Role", "trainer-workers")
    assert role["rules"] == [
        {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create", "get", "delete"]},
        {"apiGroups": [""], "resources": ["podtemplates"], "resourceNames": [POD_TEMPLATE],
         "verbs": ["get"]},
    ]
    binding = find(objects[overlay], "RoleBinding", "trainer-workers")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": "trainer-workers"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "trainer",
                                    "namespace": binding["metadata"]["namespace"]}]
    # The trainer's token: projected, short-lived, read-only (nothing is automounted).
    trainer = pod_spec(find(objects[overlay], "StatefulSet", "trainer"))
    assert trainer["serviceAccountName"] == "trainer"
    assert trainer["automountServiceAccountToken"] is False
    volume = {v["name"]: v for v in trainer["volumes"]}["kube-api"]["projected"]["sources"]
    assert volume[0]["serviceAccountToken"]["expirationSeconds"] <= 3600
    mount = {m["name"]: m for m in trainer["containers"][0]["volumeMounts"]}["kube-api"]
    assert mount["readOnly"] is True


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_workers_reach_each_other_and_nothing_else_in_the_namespace(
        objects: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    policies = [o for o in objects[overlay] if o["kind"] == "NetworkPolicy"]
    labels = worker_job(objects[overlay])["spec"]["template"]["metadata"]["labels"]
    for direction in ("Ingress", "Egress"):
        rules = list(policy_rules(policies, labels, direction))
        inside = [(peer, ports) for peer, ports in rules if "namespaceSelector" not in peer]
        assert inside, direction
        for peer, ports in inside:
            assert peer["podSelector"] == {"matchLabels": WORKER}, (direction, peer)
            assert ("TCP", RENDEZVOUS_PORT) in ports
        outside = {(peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
                    protocol, port)
                   for peer, ports in rules if "namespaceSelector" in peer
                   for protocol, port in ports}
        assert outside == (DNS if direction == "Egress" else set()), direction
    # No other pod's policy lets it reach the workers, nor them it.
    for policy in policies:
        if selects(policy["spec"]["podSelector"], labels):
            continue
        for rule in [*policy["spec"].get("ingress", []), *policy["spec"].get("egress", [])]:
            for peer in [*rule.get("from", []), *rule.get("to", [])]:
                in_namespace = "podSelector" in peer and "namespaceSelector" not in peer
                assert not (in_namespace and selects(peer["podSelector"], labels)), (
                    policy["metadata"]["name"])
