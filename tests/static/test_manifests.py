"""Kubernetes manifests: every overlay renders, validates against the Kubernetes schema,
passes checkov (except what manifests/checkov-waivers.yaml waives, with a reason), and keeps
the design's promises: gRPC health probes, drain within the grace period, locked-down pods,
a network policy for every pod, replication and disruption budgets in prod."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.core.names import SERVICE_NAMES
from tests.support.manifests import (
    KUBERNETES_VERSIONS,
    OVERLAYS,
    SERVICES,
    assert_locked_down,
    find,
    pod_spec,
    workloads,
)
from tests.support.paths import REPO
from tests.support.tools import check, find_tool, run

SHUTDOWN_GRACE_S = 10.0


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_validates_against_the_kubernetes_schema(
        rendered: dict[str, Path], overlay: str, version: str) -> None:
    validate = find_tool("kubernetes-validate", "PyPI kubernetes-validate")
    output = check([validate, "--strict", "--quiet", "--kubernetes-version", version,
                    str(rendered[overlay])])
    # It has no schema for custom resources and only warns about them: only cert-manager's
    # may be there (test_security.py checks how they fit together).
    for line in output.splitlines():
        assert re.search(r"Couldn't find schema for kind (Certificate|Issuer) with api "
                         r"version cert-manager\.io/v1 ", line), line


def test_checkov_reports_nothing_that_is_not_waived(
        rendered: dict[str, Path], tmp_path: Path) -> None:
    checkov = find_tool("checkov", "PyPI checkov, in its own environment .venv-tools")
    for overlay, path in rendered.items():
        (tmp_path / f"{overlay}.yaml").write_text(path.read_text())
    result = run([checkov, "--directory", str(tmp_path), "--framework", "kubernetes",
                  "--output", "json", "--quiet", "--skip-download"], timeout=600)
    assert result.returncode in (0, 1), result.stderr
    reports = json.loads(result.stdout)
    failed = [(f["check_id"], f["resource"], Path(f["file_path"]).name)
              for report in (reports if isinstance(reports, list) else [reports])
              for f in report["results"]["failed_checks"]]
    assert failed or result.returncode == 0

    waivers = yaml.safe_load((REPO / "manifests" / "checkov-waivers.yaml").read_text())
    assert all(w.get("reason", "").strip() for w in waivers), "every waiver needs a reason"

    def waiver_for(check_id: str, resource: str) -> dict[str, Any] | None:
        return next((w for w in waivers if w["check"] == check_id
                     and ("*" in w["resources"] or resource in w["resources"])), None)

    unwaived = sorted({f for f in failed if waiver_for(f[0], f[1]) is None})
    assert not unwaived, "checkov failures with no waiver:\n" + "\n".join(map(str, unwaived))
    used = {(w["check"], r) for w in waivers for r in w["resources"]
            if any(f[0] == w["check"] and r in ("*", f[1]) for f in failed)}
    stale = [(w["check"], r) for w in waivers for r in w["resources"]
             if (w["check"], r) not in used]
    assert not stale, f"waivers that match no finding any more (remove them): {stale}"


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("service", SERVICES)
def test_grpc_services_use_health_probes_and_drain_in_time(
        objects: dict[str, list[dict[str, Any]]], overlay: str, service: str) -> None:
    kind = "StatefulSet" if service == "trainer" else "Deployment"
    spec = pod_spec(find(objects[overlay], kind, service))
    container = spec["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    env = {e["name"]: e.get("value") for e in container["env"]}
    # The gRPC port speaks mutual TLS, which kubelet cannot: the probes use the plaintext
    # health-only port.
    port = ports["health"]
    assert env["RECSYS_GRPC_PORT"] == str(ports["grpc"])
    assert env["RECSYS_HEALTH_PORT"] == str(port) != env["RECSYS_GRPC_PORT"]
    # Readiness follows the service's dependencies; liveness and startup only the process.
    assert container["readinessProbe"]["grpc"] == {"port": port, "service": SERVICE_NAMES[service]}
    assert container["livenessProbe"]["grpc"] == {"port": port, "service": "liveness"}
    assert container["startupProbe"]["grpc"] == {"port": port, "service": "liveness"}
    config = find(objects[overlay], "ConfigMap", "recsys-config")["data"]
    # Its own certificate, and the CA its clients' certificates must chain to.
    tls = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}["tls"]
    assert {v["name"]: v for v in spec["volumes"]}["tls"]["secret"]["secretName"] == (
        f"{service}-tls")
    assert (config["RECSYS_TLS_CERT_FILE"], config["RECSYS_TLS_KEY_FILE"],
            config["RECSYS_TLS_CA_FILE"]) == (f"{tls}/tls.crt", f"{tls}/tls.key", f"{tls}/ca.crt")
    assert config["RECSYS_GRPC_HOST"] == "0.0.0.0"
    grace = float(config["RECSYS_SHUTDOWN_GRACE_S"])
    assert grace == SHUTDOWN_GRACE_S
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pre_stop + grace < spec["terminationGracePeriodSeconds"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_is_locked_down(objects: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    for workload in workloads(objects[overlay]):
        assert_locked_down(f"{workload['kind']}/{workload['metadata']['name']}",
                           pod_spec(workload))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_a_network_policy_allows_each_pod_its_flows(
        objects: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    policies = [o for o in objects[overlay] if o["kind"] == "NetworkPolicy"]
    default_deny = find(objects[overlay], "NetworkPolicy", "default-deny")
    assert default_deny["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    selected = {p["spec"]["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/name")
                for p in policies}
    for workload in workloads(objects[overlay]):
        app = workload["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"]
        assert app in selected, f"no network policy for the pods of {app}"


# The replicated tiers Envoy balances over (and Envoy itself): rolled one pod at a time.
ROLLED = ("ingest", "recommender", "envoy")


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("name", ROLLED)
def test_a_rolling_update_never_takes_capacity_away(
        objects: dict[str, list[dict[str, Any]]], overlay: str, name: str) -> None:
    """The same semantics the local stack shows with two replicas (tests/e2e): a new pod is
    ready before an old one goes, an old one leaves the endpoints (preStop) before its
    SIGTERM, and drains within its termination grace period."""
    deployment = find(objects[overlay], "Deployment", name)
    strategy = deployment["spec"]["strategy"]
    assert strategy["type"] == "RollingUpdate"
    assert strategy["rollingUpdate"]["maxUnavailable"] == 0
    assert strategy["rollingUpdate"]["maxSurge"] >= 1
    assert deployment["spec"]["minReadySeconds"] > 0
    spec = pod_spec(deployment)
    container = spec["containers"][0]
    assert "readinessProbe" in container
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert 0 < pre_stop < spec["terminationGracePeriodSeconds"]


def test_prod_disruption_budgets_leave_all_but_one_pod_serving(
        objects: dict[str, list[dict[str, Any]]]) -> None:
    prod = objects["prod"]
    for name in ROLLED:
        budget = find(prod, "PodDisruptionBudget", name)["spec"]
        assert budget["maxUnavailable"] == 1
        pods = find(prod, "Deployment", name)["spec"]["template"]["metadata"]["labels"]
        assert budget["selector"]["matchLabels"].items() <= pods.items()


def test_prod_is_replicated_and_protected(objects: dict[str, list[dict[str, Any]]]) -> None:
    prod = objects["prod"]
    for name in ("ingest", "recommender", "envoy"):
        hpa = find(prod, "HorizontalPodAutoscaler", name)
        assert hpa["spec"]["minReplicas"] >= 2
        assert "replicas" not in find(prod, "Deployment", name)["spec"], (
            f"{name}: the HPA owns the replica count")
        find(prod, "PodDisruptionBudget", name)
    kafka = find(prod, "StatefulSet", "kafka")
    voters = find(prod, "ConfigMap", "kafka-config")["data"]["KAFKA_CONTROLLER_QUORUM_VOTERS"]
    assert kafka["spec"]["replicas"] == len(voters.split(",")) == 3
    find(prod, "PodDisruptionBudget", "kafka")


def test_dev_runs_one_replica_of_everything(objects: dict[str, list[dict[str, Any]]]) -> None:
    dev = objects["dev"]
    assert not [o for o in dev if o["kind"] == "HorizontalPodAutoscaler"]
    for workload in workloads(dev):
        assert workload["spec"].get("replicas", 1) == 1, workload["metadata"]["name"]
