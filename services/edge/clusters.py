"""Upstream clusters: the three gRPC services, and Envoy's own admin endpoint."""

from __future__ import annotations

import ipaddress
from typing import Any

from services.core.names import SERVICE_NAMES
from services.edge.blocks import socket, tls_context, tls_socket, typed
from services.edge.policy import TlsFiles

# How often Envoy asks each host for its health, and how long it waits for the answer: a host
# that turns NOT_SERVING gets no new calls after at most their sum.
HEALTH_CHECK_INTERVAL_S = 2
HEALTH_CHECK_TIMEOUT_S = 1


def static_cluster(name: str, host: str, port: int, *more: tuple[str, int]) -> dict[str, Any]:
    """A cluster of fixed hosts: (`host`, `port`), then `more` of them."""
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": socket(h, p)}} for h, p in ((host, port), *more)]}]},
    }


def grpc_cluster(name: str, address: str, tls: TlsFiles | None = None) -> dict[str, Any]:
    """HTTP/2 to every host of service `name` at `address` ("host:port", or several of them
    comma-separated: one per replica), health-checked over grpc.health.v1, round robin over the
    healthy ones; with `tls`, mutual TLS: Envoy's client certificate, and the service's
    certificate checked against the CA and the service's name (its cluster name: a DNS SAN of
    the server certificate)."""
    hosts = [(host, int(port)) for host, _, port in
             (item.strip().rpartition(":") for item in address.split(","))]
    cluster = static_cluster(name, *hosts[0], *hosts[1:])
    try:
        for host, _ in hosts:
            ipaddress.ip_address(host)
    except ValueError:  # a DNS name: every address it resolves to, refreshed
        if len(hosts) > 1:
            raise ValueError(f"{name}: one DNS name, or IP addresses: {address}") from None
        cluster.update(type="STRICT_DNS", dns_lookup_family="V4_PREFERRED",
                       dns_refresh_rate="5s", respect_dns_ttl=True)
    cluster.update({
        "lb_policy": "ROUND_ROBIN",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": typed(
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                explicit_http_config={"http2_protocol_options": {}}),
        },
        "health_checks": [{
            "timeout": f"{HEALTH_CHECK_TIMEOUT_S}s",
            "interval": f"{HEALTH_CHECK_INTERVAL_S}s",
            "no_traffic_interval": "5s",
            "unhealthy_threshold": 2,
            "healthy_threshold": 1,
            "grpc_health_check": {"service_name": SERVICE_NAMES[name]},
        }],
        "outlier_detection": {
            "consecutive_5xx": 5,
            "consecutive_gateway_failure": 3,
            "interval": "5s",
            "base_ejection_time": "15s",
            "max_ejection_percent": 50,
        },
    })
    if tls is not None:
        cluster["transport_socket"] = tls_socket(
            "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            tls_context(tls, alpn=["h2"], peer_names=[name]), sni=name)
    return cluster
