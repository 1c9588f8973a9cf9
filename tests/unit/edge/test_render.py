"""`python -m services.edge`: its profiles and options, and what the package may import."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
import yaml

from services.core.names import SERVICE_NAMES
from services.edge.__main__ import main
from services.edge.policy import DEFAULT_POLICIES, EdgeSecurity, TlsFiles, service_of
from services.edge.profiles import LOCAL_PKI
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
