"""Reading the rendered Kubernetes manifests: the overlays, the services' workloads and the
objects in them, and the rules of their network policies."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from services.core.names import SERVICE_NAMES

OVERLAYS = ("dev", "prod")
# The oldest Kubernetes the manifests support (native gRPC probes, the preStop sleep action)
# and the newest schema kubernetes-validate knows.
KUBERNETES_VERSIONS = ("1.31.0", "1.37.0")
# Every pod's egress out of the namespace: kube-dns, (namespace, protocol, port).
DNS = {("kube-system", "UDP", 53), ("kube-system", "TCP", 53)}
SERVICES = tuple(SERVICE_NAMES)
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "Job"}


def workloads(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] in WORKLOAD_KINDS]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    """The one object of `kind` named `name` (for a ConfigMap, with its content hash)."""
    generated = kind == "ConfigMap"
    matches = [o for o in objects if o["kind"] == kind and (
        o["metadata"]["name"] == name
        or (generated and o["metadata"]["name"].rsplit("-", 1)[0] == name))]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


def assert_locked_down(name: str, spec: dict[str, Any]) -> None:
    """A pod spec with no API token, as non-root with the runtime's seccomp profile, every
    container read-only, without privileges or capabilities, and bounded."""
    assert spec["automountServiceAccountToken"] is False, name
    assert spec["securityContext"]["runAsNonRoot"] is True, name
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
    for container in spec["containers"] + spec.get("initContainers", []):
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True, name
        assert security["allowPrivilegeEscalation"] is False, name
        assert security["capabilities"] == {"drop": ["ALL"]}, name
        for bound in ("requests", "limits"):
            assert {"cpu", "memory"} <= container["resources"][bound].keys(), name


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, f"unsupported selector {selector}"
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def rule_ports(rule: dict[str, Any]) -> set[tuple[str, int]]:
    ports = rule.get("ports")
    assert ports, f"a rule without ports allows every port: {rule}"
    return {(p.get("protocol", "TCP"), p["port"]) for p in ports}


def policy_rules(policies: list[dict[str, Any]], labels: dict[str, str],
                 direction: str) -> Iterator[tuple[dict[str, Any], set[tuple[str, int]]]]:
    """(peer, ports) of every rule that applies to a pod with `labels` in `direction`."""
    key, peers = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    for policy in policies:
        spec = policy["spec"]
        if direction in spec["policyTypes"] and selects(spec["podSelector"], labels):
            for rule in spec.get(key, []):
                assert rule.get(peers), f"{policy['metadata']['name']}: a rule open to all"
                for peer in rule[peers]:
                    assert "ipBlock" not in peer, f"{policy['metadata']['name']}: ipBlock"
                    yield peer, rule_ports(rule)
