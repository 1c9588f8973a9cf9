"""The rendered Envoy configuration: what the Kubernetes render secures and exposes, the stats
listener through the real Envoy, and route policies (the committed renders' drift and
validity checks are static: tests/static/test_edge_config.py)."""

from __future__ import annotations

import http.client
from pathlib import Path
from typing import Any

import pytest
import yaml

from scripts.localstack.components import HOST, free_ports
from scripts.localstack.envoy import Envoy
from scripts.localstack.pki import ensure_pki
from services.core.names import SERVICE_NAMES
from services.edge.descriptor import DESCRIPTOR
from services.edge.policy import DEFAULT_POLICIES, EdgeSecurity, RateLimit, RoutePolicy
from services.edge.profiles import pki_security
from services.edge.render import render_envoy_config
from services.edge.security_filters import ADDRESS_LIMIT_FILTER
from tests.support.paths import REPO

pytestmark = pytest.mark.integration

MANIFESTS = REPO / "manifests" / "envoy"


def test_kubernetes_render_is_secured() -> None:
    """TLS on the edge listener, tokens and scopes on every service route, mTLS upstream."""
    k8s = yaml.safe_load((MANIFESTS / "envoy.yaml").read_text())
    edge = next(item for item in k8s["static_resources"]["listeners"] if item["name"] == "edge")
    chain = edge["filter_chains"][0]
    assert chain["transport_socket"]["name"] == "envoy.transport_sockets.tls"
    manager = chain["filters"][0]["typed_config"]
    filters = [f["name"] for f in manager["http_filters"]]
    # The token before anything reads a body; scope and rate limit once routed.
    assert filters == ["envoy.filters.http.header_mutation", ADDRESS_LIMIT_FILTER,
                       "envoy.filters.http.jwt_authn", "envoy.filters.http.buffer",
                       "envoy.filters.http.grpc_json_transcoder", "envoy.filters.http.rbac",
                       "envoy.filters.http.local_ratelimit", "envoy.filters.http.router"]
    for route in manager["route_config"]["virtual_hosts"][0]["routes"]:
        per_route = route["typed_per_filter_config"]
        jwt = per_route["envoy.filters.http.jwt_authn"]
        if "direct_response" in route and "grpc" in route["match"]:  # gRPC 404s: no token
            assert jwt["disabled"] is True
        elif "direct_response" in route:  # REST, before transcoding: a token first
            assert jwt["requirement_name"] == "token"
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
    prefix = f"/{SERVICE_NAMES['trainer']}/"
    method = f"{prefix}StartTrainingJob"
    pki = ensure_pki(tmp_path)
    policies = {**DEFAULT_POLICIES, method: RoutePolicy(
        scope="admin", rate_limit=RateLimit(1, interval_s=60), timeout="30s")}
    routes = _routes(pki_security(pki.directory, policies=policies))
    override, service = routes[method], routes[prefix]
    assert override["route"]["timeout"] == "30s"
    assert override["route"]["max_stream_duration"] == {"max_stream_duration": "30s",
                                                        "grpc_timeout_header_max": "30s"}
    limit = override["typed_per_filter_config"]["envoy.filters.http.local_ratelimit"]
    assert limit["token_bucket"] == {"max_tokens": 1, "tokens_per_fill": 1,
                                     "fill_interval": "60s"}
    assert service["route"]["timeout"] == "10s"
    # The override comes first, so it wins over the service's prefix.
    assert list(routes).index(method) < list(routes).index(prefix)


def test_every_service_needs_a_policy(tmp_path: Path) -> None:
    pki = ensure_pki(tmp_path)
    policies = {k: v for k, v in DEFAULT_POLICIES.items() if k != "trainer"}
    with pytest.raises(ValueError, match="no route policy for trainer"):
        pki_security(pki.directory, policies=policies)
