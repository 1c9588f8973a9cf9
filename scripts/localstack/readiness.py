"""Whether a replica serves: its own grpc.health.v1 answer, and Envoy's view of it."""

from __future__ import annotations

import urllib.request

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def serving(target: str, service: str) -> bool:
    """Whether the server at `target` (plaintext) says `service` is SERVING."""
    with grpc.insecure_channel(target) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=2)
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def healthy_in_envoy(admin_url: str, cluster: str, target: str) -> bool:
    """Whether Envoy's last health check of host `target` in `cluster` passed (its admin
    endpoint's /clusters)."""
    with urllib.request.urlopen(f"{admin_url}/clusters", timeout=5) as reply:
        lines = reply.read().decode().splitlines()
    return f"{cluster}::{target}::health_flags::healthy" in lines
