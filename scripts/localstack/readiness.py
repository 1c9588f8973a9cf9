"""Whether a replica serves: its own grpc.health.v1 answer, and Envoy's view of its cluster."""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Mapping
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.core.client import channel
from services.core.tls import ClientTLS

SERVING = health_pb2.HealthCheckResponse.SERVING


def health(target: str, service: str, *, tls: ClientTLS | None = None,
           timeout: float = 2.0) -> int | None:
    """The health status the server at `target` gives `service` (over TLS with `tls`: the
    local stack's servers take mutual TLS unless it runs with --plaintext); None when it does
    not answer."""
    with grpc.insecure_channel(target) if tls is None else channel(target, tls=tls) as chan:
        try:
            reply = health_pb2_grpc.HealthStub(chan).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError:
            return None
    return int(reply.status)


def serving(target: str, service: str, *, tls: ClientTLS | None = None) -> bool:
    """Whether the server at `target` says `service` is SERVING."""
    return health(target, service, tls=tls) == SERVING


def healthy_in_envoy(admin_url: str, cluster: str, hosts: int) -> bool:
    """Whether Envoy's health checks find `hosts` healthy hosts in `cluster`
    (envoy_cluster_membership_healthy: the admin endpoint answers only its Prometheus stats
    and /ready)."""
    with urllib.request.urlopen(f"{admin_url}/stats/prometheus", timeout=5) as reply:
        stats = reply.read().decode()
    found = re.search(rf'^envoy_cluster_membership_healthy{{envoy_cluster_name="{cluster}"}} '
                      r"(\d+)$", stats, re.MULTILINE)
    return found is not None and int(found.group(1)) == hosts


def stack_client_tls(security: Mapping[str, Any]) -> ClientTLS | None:
    """The admin's client TLS for a local stack's servers, from its <state>/security.json
    (as read); None when the stack runs with --plaintext."""
    if not security["mtls"]:
        return None
    return ClientTLS(ca_file=security["ca_file"], cert_file=security["client_cert_file"],
                     key_file=security["client_key_file"])
