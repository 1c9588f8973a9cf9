"""`python -m services.edge`: its profiles and options, and what the package may import."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
import yaml
from google.protobuf import descriptor_pb2

from services.core.names import SERVICE_NAMES
from services.edge.__main__ import main
from services.edge.clusters import grpc_cluster
from services.edge.descriptor import DESCRIPTOR
from services.edge.policy import DEFAULT_POLICIES, EdgeSecurity, TlsFiles, service_of
from services.edge.profiles import LOCAL_PKI
from services.edge.retries import IDEMPOTENT
from services.edge.security_filters import ADDRESS_LIMIT_FILTER
from tests.support.paths import REPO


def _render(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    main(list(argv))
    config: dict[str, Any] = yaml.safe_load(capsys.readouterr().out)
    return config


def _edge_chain(config: dict[str, Any]) -> dict[str, Any]:
    chain: dict[str, Any] = config["static_resources"]["listeners"][0]["filter_chains"][0]
    return chain


def _filters(config: dict[str, Any]) -> list[str]:
    manager = _edge_chain(config)["filters"][0]["typed_config"]
    return [f["name"] for f in manager["http_filters"]]


def test_the_local_render_is_secured_with_the_local_pki(
        capsys: pytest.CaptureFixture[str]) -> None:
    config = _render(capsys)
    tls = _edge_chain(config)["transport_socket"]["typed_config"]["common_tls_context"]
    assert tls["tls_certificates"][0]["certificate_chain"] == {
        "filename": str(LOCAL_PKI / "server.crt")}
    assert "envoy.filters.http.jwt_authn" in _filters(config)
    assert all("transport_socket" not in c for c in config["static_resources"]["clusters"])


def test_plain_drops_tls_tokens_and_rate_limits(capsys: pytest.CaptureFixture[str]) -> None:
    config = _render(capsys, "--plain")
    assert "transport_socket" not in _edge_chain(config)
    assert _filters(config) == ["envoy.filters.http.header_mutation",
                                "envoy.filters.http.buffer",
                                "envoy.filters.http.grpc_json_transcoder",
                                "envoy.filters.http.router"]


def test_tokens_are_checked_before_any_filter_reads_a_body(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert _filters(_render(capsys)) == [
        "envoy.filters.http.header_mutation",  # drops a client's x-recsys-caller
        ADDRESS_LIMIT_FILTER, "envoy.filters.http.jwt_authn",
        "envoy.filters.http.buffer", "envoy.filters.http.grpc_json_transcoder",
        "envoy.filters.http.rbac", "envoy.filters.http.local_ratelimit",
        "envoy.filters.http.router"]


def test_the_admin_endpoint_answers_only_stats_and_readiness(
        capsys: pytest.CaptureFixture[str]) -> None:
    for profile in ((), ("--k8s",), ("--compose",)):
        admin = _render(capsys, *profile)["admin"]
        assert admin["allow_paths"] == [{"prefix": "/stats/prometheus"}, {"prefix": "/ready"}]


def test_mtls_speaks_mutual_tls_to_every_service(capsys: pytest.CaptureFixture[str]) -> None:
    clusters = _render(capsys, "--mtls")["static_resources"]["clusters"]
    assert [c["name"] for c in clusters] == list(SERVICE_NAMES)
    for cluster in clusters:
        context = cluster["transport_socket"]["typed_config"]
        assert context["sni"] == cluster["name"]
        assert context["common_tls_context"]["validation_context"]["trusted_ca"] == {
            "filename": str(LOCAL_PKI / "ca.crt")}


def test_options_override_the_profile(capsys: pytest.CaptureFixture[str]) -> None:
    config = _render(capsys, "--k8s", "--listen-port", "18080", "--ingest", "10.0.0.7:1234")
    edge = config["static_resources"]["listeners"][0]
    assert edge["address"]["socket_address"] == {"address": "0.0.0.0", "port_value": 18080}
    ingest = config["static_resources"]["clusters"][0]
    endpoint = ingest["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert endpoint["address"]["socket_address"] == {"address": "10.0.0.7", "port_value": 1234}
    assert ingest["type"] == "STATIC"  # an IP address; a name would be STRICT_DNS


def test_a_method_path_belongs_to_its_service() -> None:
    for name, full_name in SERVICE_NAMES.items():
        assert service_of(f"/{full_name}/AnyMethod") == name


def test_mutual_tls_needs_a_ca() -> None:
    with pytest.raises(ValueError, match="needs a CA"):
        EdgeSecurity(listener_tls=TlsFiles(cert="c", key="k"), jwks="j",
                     upstream_tls=TlsFiles(cert="c", key="k"), policies=DEFAULT_POLICIES)


def test_the_edge_imports_only_core_and_itself() -> None:
    """services.edge is product code: no service, no development harness (scripts)."""
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, services.edge.__main__; print(*sorted(m for m in "
         "sys.modules if m.split('.')[0] in ('services', 'scripts', 'tests')))"],
        cwd=REPO, capture_output=True, text=True, check=True, timeout=60).stdout.split()
    assert "services.edge.render" in loaded
    others = [m for m in loaded if m not in ("services", "services.core", "services.edge")
              and not m.startswith(("services.core.", "services.edge."))]
    assert others == []


def _routes(config: dict[str, Any]) -> list[dict[str, Any]]:
    manager = _edge_chain(config)["filters"][0]["typed_config"]
    routes: list[dict[str, Any]] = manager["route_config"]["virtual_hosts"][0]["routes"]
    return routes


def test_replicas_are_hosts_of_one_health_checked_cluster(
        capsys: pytest.CaptureFixture[str]) -> None:
    config = _render(capsys, "--plain", "--recommender", "127.0.0.1:50053,127.0.0.1:50063")
    cluster = {c["name"]: c for c in config["static_resources"]["clusters"]}["recommender"]
    hosts = [e["endpoint"]["address"]["socket_address"]["port_value"]
             for e in cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]]
    assert hosts == [50053, 50063] and cluster["type"] == "STATIC"
    assert cluster["health_checks"][0]["grpc_health_check"] == {
        "service_name": SERVICE_NAMES["recommender"]}


def test_a_dns_upstream_is_one_name() -> None:
    with pytest.raises(ValueError, match="one DNS name"):
        grpc_cluster("ingest", "ingest-a:50051,ingest-b:50051")


def test_only_idempotent_methods_are_retried_on_another_replica(
        capsys: pytest.CaptureFixture[str]) -> None:
    retried: dict[str, list[str]] = {}
    for route in _routes(_render(capsys)):
        policy = route.get("route", {}).get("retry_policy")
        if policy is not None:
            assert policy["retry_host_predicate"][0]["name"] == (
                "envoy.retry_host_predicates.previous_hosts")
            assert {"unavailable", "reset", "connect-failure"} <= set(
                policy["retry_on"].split(","))
            retried[route["route"]["cluster"]] = [
                header["string_match"]["exact"]
                for header in policy["retriable_request_headers"]]
    recommender, ingest = SERVICE_NAMES["recommender"], SERVICE_NAMES["ingest"]
    assert retried == {
        "ingest": [f"/{ingest}/CreateInteraction"],
        "recommender": [f"/{recommender}/{m}" for m in ("GetModelInfo", "Recommend",
                                                         "SimilarItems")],
    }


def test_every_retried_method_is_a_unary_rpc_of_the_contracts() -> None:
    methods = {f"/{file.package}.{service.name}/{method.name}"
               for file in descriptor_pb2.FileDescriptorSet.FromString(
                   DESCRIPTOR.read_bytes()).file
               for service in file.service for method in service.method
               if not (method.client_streaming or method.server_streaming)}
    assert methods >= IDEMPOTENT
