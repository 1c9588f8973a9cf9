"""Security of what ships to Kubernetes (and into the images): no secret value in the
repository, the rendered manifests, ConfigMaps, environment literals or images; every Secret
referenced is one that scripts/deploy.sh or cert-manager provides; every workload has its own
service account without an automounted API token, and no RBAC but the trainer's for its
workers' Jobs; the network policies allow exactly the design's flows; Envoy reads only files
that are mounted into its pod."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from scripts.images.context import assemble
from tests.support.manifests import (
    DNS,
    OVERLAYS,
    SERVICES,
    find,
    pod_spec,
    policy_rules,
    selects,
    workloads,
)
from tests.support.paths import REPO

# Names that say "this is a secret value".
SECRET_NAME = re.compile(r"passw(or)?d|secret|token|credential|private|api_?key|_auth$",
                         re.IGNORECASE)
# A URL with a password in it, unless the password is a $(VAR) reference.
URL_PASSWORD = re.compile(r"://[^/\s:@]*:(?!\$\()[^@\s/]+@")
RBAC_KINDS = {"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}
# The only RBAC: the trainer starts the indexed Jobs of distributed training.
TRAINER_RBAC = {("Role", "trainer-workers"), ("RoleBinding", "trainer-workers")}
# Secrets that scripts/deploy.sh creates (the others are cert-manager's: Certificates).
DEPLOY_SECRETS = {"recsys-secrets", "envoy-jwks"}
# Secrets the operator creates for an optional feature, referenced with `optional: true`: the
# snapshot store's keys of distributed training (README, "Distributed training").
OPERATOR_SECRETS = {"trainer-snapshots"}
ENVOY_CONFIG = REPO / "manifests" / "envoy" / "envoy.yaml"

# The design's flows (DESIGN.md, manifests/base/network-policies.yaml): (from, to, TCP port)
# between the pods of the namespace.
FLOWS = {
    ("envoy", "ingest", 50051), ("envoy", "trainer", 50052), ("envoy", "recommender", 50053),
    ("ingest", "kafka", 9092), ("trainer", "kafka", 9092), ("recommender", "kafka", 9092),
    ("kafka", "kafka", 9092), ("kafka", "kafka", 9093),
    ("trainer", "mlflow", 5000), ("recommender", "mlflow", 5000),
    ("recommender", "redis", 6379),
    ("mlflow", "postgres", 5432),
    ("prometheus", "ingest", 9101), ("prometheus", "trainer", 9102),
    ("prometheus", "recommender", 9103), ("prometheus", "envoy", 9901),
    ("grafana", "prometheus", 9090),
}
# Flows with other namespaces: (direction, app, namespace, protocol, port).
EXTERNAL_INGRESS = {("envoy", "ingress-nginx", "TCP", 8080)}


def containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*spec.get("initContainers", []), *spec["containers"]]


def app_of(workload: dict[str, Any]) -> str:
    name: str = workload["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"]
    return name


def referenced_secrets(objects: list[dict[str, Any]]) -> Iterator[tuple[str, str]]:
    """(where, Secret name) for every reference to a Secret."""
    for workload in workloads(objects):
        where = f"{workload['kind']}/{workload['metadata']['name']}"
        spec = pod_spec(workload)
        for volume in spec.get("volumes", []):
            if "secret" in volume:
                yield where, volume["secret"]["secretName"]
            for source in volume.get("projected", {}).get("sources", []):
                if "secret" in source:
                    yield where, source["secret"]["name"]
        for container in containers(spec):
            for variable in container.get("env", []):
                ref = variable.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    yield where, ref["name"]
            for source in container.get("envFrom", []):
                if "secretRef" in source:
                    yield where, source["secretRef"]["name"]
    for ingress in (o for o in objects if o["kind"] == "Ingress"):
        for tls in ingress["spec"].get("tls", []):
            yield f"Ingress/{ingress['metadata']['name']}", tls["secretName"]


def test_no_kustomization_generates_a_secret() -> None:
    for path in [*REPO.joinpath("manifests").rglob("kustomization.yaml"),
                 REPO / "observability" / "kustomization.yaml"]:
        assert "secretGenerator" not in yaml.safe_load(path.read_text()), path


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_secret_is_rendered(objects: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    assert not [o["metadata"]["name"] for o in objects[overlay] if o["kind"] == "Secret"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_secret_referenced_is_provided(
        objects: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    certificates = {o["spec"]["secretName"]: o for o in objects[overlay]
                    if o["kind"] == "Certificate"}
    issuers = {o["metadata"]["name"] for o in objects[overlay] if o["kind"] == "Issuer"}
    for name, certificate in certificates.items():
        assert certificate["spec"]["issuerRef"] == {
            "kind": "Issuer", "name": certificate["spec"]["issuerRef"]["name"]}, name
        assert certificate["spec"]["issuerRef"]["name"] in issuers, name
        assert certificate["spec"]["privateKey"]["rotationPolicy"] == "Always", name
    for where, secret in referenced_secrets(objects[overlay]):
        if where.startswith("Ingress/"):
            # The public certificate: cert-manager's ingress-shim issues it in prod; dev's
            # Ingress speaks plain HTTP.
            ingress = find(objects[overlay], "Ingress", where.split("/")[1])
            assert "cert-manager.io/cluster-issuer" in ingress["metadata"]["annotations"], where
            continue
        assert secret in DEPLOY_SECRETS | OPERATOR_SECRETS | certificates.keys(), (
            f"{where}: Secret {secret}")
    # Each gRPC server has its own certificate, with the name Envoy checks.
    for service in SERVICES:
        names = certificates[f"{service}-tls"]["spec"]["dnsNames"]
        assert service in names and "server auth" in certificates[f"{service}-tls"]["spec"][
            "usages"]
    assert certificates["envoy-client-tls"]["spec"]["usages"] == ["client auth"]


def test_dev_ingress_has_no_tls_and_prod_gets_its_certificate_from_cert_manager(
        objects: dict[str, list[dict[str, Any]]]) -> None:
    assert "tls" not in find(objects["dev"], "Ingress", "recsys")["spec"]
    prod = find(objects["prod"], "Ingress", "recsys")
    assert prod["spec"]["tls"][0]["secretName"] == "recsys-tls"
    assert prod["metadata"]["annotations"]["cert-manager.io/cluster-issuer"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_configmaps_hold_no_secrets(
        objects: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    for config in (o for o in objects[overlay] if o["kind"] == "ConfigMap"):
        name = config["metadata"]["name"]
        for key, value in config.get("data", {}).items():
            assert not SECRET_NAME.search(key), f"ConfigMap {name}: key {key}"
            assert "PRIVATE KEY-----" not in value, f"ConfigMap {name}: {key} holds a key"
            assert not URL_PASSWORD.search(value), f"ConfigMap {name}: {key} holds a password"
        assert not config.get("binaryData", {}).keys() - {"recsys.binpb"}, name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_secret_values_reach_containers_only_from_secrets(
        objects: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    for workload in workloads(objects[overlay]):
        spec = pod_spec(workload)
        secret_mounts = {v["name"] for v in spec.get("volumes", []) if "secret" in v}
        for container in containers(spec):
            where = f"{workload['metadata']['name']}/{container['name']}"
            mounted = [m["mountPath"] for m in container.get("volumeMounts", [])
                       if m["name"] in secret_mounts]
            from_secrets = set()
            for variable in container.get("env", []):
                name, value = variable["name"], variable.get("value")
                if "secretKeyRef" in variable.get("valueFrom", {}):
                    from_secrets.add(name)
                elif value is not None and name.endswith("_FILE"):
                    if SECRET_NAME.search(name):  # a path: into a Secret's volume
                        assert any(value.startswith(f"{m}/") for m in mounted), where
                elif SECRET_NAME.search(name):
                    raise AssertionError(f"{where}: {name} is a literal, not a secretKeyRef")
                if value is not None:
                    assert not URL_PASSWORD.search(value), f"{where}: {name}"
                    for reference in re.findall(r"://[^/\s@]*\$\((\w+)\)[^@\s]*@", value):
                        assert reference in from_secrets, f"{where}: {name} uses {reference}"
            for argument in [*container.get("command", []), *container.get("args", [])]:
                assert not URL_PASSWORD.search(argument), where
                assert "--requirepass" not in argument, where


def test_images_hold_no_secrets(tmp_path: Path) -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    for name in re.findall(r"^(?:ENV|ARG)\s+(\w+)", dockerfile, re.MULTILINE):
        assert not SECRET_NAME.search(name), name
    for continued in re.findall(r"^\s+(\w+)=", dockerfile, re.MULTILINE):
        assert not SECRET_NAME.search(continued), continued
    # A build context holds only what scripts/images puts there: local keys and certificates
    # (.local/), build/ and the virtual environments stay out.
    for service in SERVICES:
        context = assemble(service, tmp_path)
        assert {p.name for p in context.iterdir()} == {
            "Dockerfile", "requirements.txt", "gen", "services"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_workload_has_its_own_service_account_without_a_token(
        objects: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    accounts = {o["metadata"]["name"]: o for o in objects[overlay]
                if o["kind"] == "ServiceAccount"}
    for account in accounts.values():
        assert account["automountServiceAccountToken"] is False, account["metadata"]["name"]
    used = []
    for workload in workloads(objects[overlay]):
        spec = pod_spec(workload)
        name = spec.get("serviceAccountName", "default")
        assert name in accounts, f"{workload['metadata']['name']}: service account {name}"
        assert spec["automountServiceAccountToken"] is False
        used.append(name)
    assert len(used) == len(set(used)), "workloads share a service account"
    rbac = {(o["kind"], o["metadata"]["name"]) for o in objects[overlay]
            if o["kind"] in RBAC_KINDS}
    assert rbac == TRAINER_RBAC, (
        "only the trainer talks to the Kubernetes API, for its workers' Jobs "
        "(tests/static/test_training_workers.py)")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_allow_exactly_the_designs_flows(
        objects: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    policies = [o for o in objects[overlay] if o["kind"] == "NetworkPolicy"]
    pods = {app_of(w): (w["spec"]["template"]["metadata"]["labels"],
                        {p["containerPort"] for c in pod_spec(w)["containers"]
                         for p in c.get("ports", [])})
            for w in workloads(objects[overlay])}
    flows = set()
    for source, (source_labels, _) in pods.items():
        egress = [(peer, ports) for peer, ports in policy_rules(policies, source_labels, "Egress")
                  if "namespaceSelector" not in peer]
        for target, (target_labels, target_ports) in pods.items():
            ingress = [(peer, ports) for peer, ports in
                       policy_rules(policies, target_labels, "Ingress")
                       if "namespaceSelector" not in peer]
            for port in target_ports:
                out = any(selects(peer["podSelector"], target_labels) and ("TCP", port) in ports
                          for peer, ports in egress)
                into = any(selects(peer["podSelector"], source_labels) and ("TCP", port) in ports
                           for peer, ports in ingress)
                if out and into:
                    flows.add((source, target, port))
    assert flows == FLOWS, (f"not in the design: {sorted(flows - FLOWS)}; "
                            f"blocked: {sorted(FLOWS - flows)}")

    def external(app: str, direction: str) -> set[tuple[str, str, int]]:
        found = set()
        for peer, ports in policy_rules(policies, pods[app][0], direction):
            if "namespaceSelector" in peer:
                namespace = peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
                found |= {(namespace, protocol, port) for protocol, port in ports}
        return found

    for app in pods:
        assert external(app, "Egress") == DNS, app
        assert {(app, *f) for f in external(app, "Ingress")} <= EXTERNAL_INGRESS, app
    assert {("envoy", *f) for f in external("envoy", "Ingress")} == EXTERNAL_INGRESS


def envoy_files() -> set[str]:
    """Every file path envoy.yaml names (certificates, keys, JWKS, descriptor set)."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("filename", "proto_descriptor") and isinstance(value, str):
                    found.add(value)
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(yaml.safe_load(ENVOY_CONFIG.read_text()))
    return found


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_envoy_reads_only_files_mounted_into_its_pod(
        objects: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    spec = pod_spec(find(objects[overlay], "Deployment", "envoy"))
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in spec["containers"][0]["volumeMounts"]}
    files = envoy_files()
    assert files
    for path in files:
        directory = str(Path(path).parent)
        assert directory in mounts, f"envoy.yaml reads {path}: nothing is mounted at {directory}"
        volume = mounts[directory]
        if Path(path).name.startswith("tls.") or path.endswith((".key", "jwks.json", "ca.crt")):
            assert "secret" in volume, f"{path} must come from a Secret, not {volume}"
