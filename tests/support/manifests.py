"""Reading the rendered Kubernetes manifests: the overlays, the services' workloads and the
objects in them."""

from __future__ import annotations

from typing import Any

from services.core.names import SERVICE_NAMES

OVERLAYS = ("dev", "prod")
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
