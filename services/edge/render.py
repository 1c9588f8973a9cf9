"""The Envoy bootstrap, built from a few addresses, so that the local stack, the tests,
Compose and Kubernetes all run the same listener, routes and clusters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from services.edge.blocks import LOOPBACK, socket, typed
from services.edge.clusters import grpc_cluster, static_cluster
from services.edge.descriptor import DESCRIPTOR, streaming_methods
from services.edge.listeners import edge_listener, stats_listener
from services.edge.policy import EdgeSecurity

MAX_DOWNSTREAM_CONNECTIONS = 10_000
# Envoy's heap, watched by the overload manager: the Envoy pod's memory limit
# (manifests/base/edge.yaml) is 256 MiB, and Envoy needs room beside its heap.
MAX_HEAP_BYTES = 192 * 1024 * 1024
# What the admin endpoint answers: Prometheus' scrape and the readiness probe, nothing that
# changes Envoy (/quitquitquit, /logging, /runtime_modify, /healthcheck/fail...).
ADMIN_PATHS = ("/stats/prometheus", "/ready")


def render_envoy_config(
    *,
    listen_port: int,
    admin_port: int,
    ingest: str,
    trainer: str,
    recommender: str,
    descriptor_path: str | Path,
    listen_address: str = LOOPBACK,
    stats_port: int | None = None,
    trusted_hops: int = 0,
    descriptor: Path = DESCRIPTOR,
    security: EdgeSecurity | None = None,
    admin_paths: tuple[str, ...] = ADMIN_PATHS,
) -> str:
    """The Envoy bootstrap as YAML.

    `ingest`, `trainer`, `recommender` are "host:port" upstreams: an IP address is a static
    host (several, comma-separated, for replicas), a name is resolved by DNS (a headless
    Service: every ready pod). Calls go round robin to the healthy hosts, and idempotent ones
    are retried on another host when one fails as a stopping replica does.
    `descriptor_path` is where Envoy reads the descriptor set; `descriptor` is the local copy
    read here to find the streaming methods. The admin endpoint always binds 127.0.0.1 and
    answers only `admin_paths` (tests add others to look inside);
    `stats_port` adds a listener on `listen_address` exposing only its /stats/prometheus and
    /ready (for Prometheus and probes in Kubernetes). `trusted_hops` is how many proxies in
    front of Envoy append to X-Forwarded-For (the client address is the one before them).
    `security` turns on TLS, tokens, scopes and rate limits (see services.edge);
    without it the listener is plaintext and open (benchmarks, and tests of the plain edge).
    """
    upstreams = {"ingest": ingest, "trainer": trainer, "recommender": recommender}
    listeners = [edge_listener(listen_address, listen_port, str(descriptor_path),
                               streaming_methods(descriptor), trusted_hops, security=security)]
    upstream_tls = security.upstream_tls if security else None
    clusters = [grpc_cluster(name, address, upstream_tls)
                for name, address in upstreams.items()]
    if stats_port is not None:
        listeners.append(stats_listener(listen_address, stats_port))
        clusters.append(static_cluster("admin", LOOPBACK, admin_port))
    config: dict[str, Any] = {
        "admin": {"address": socket(LOOPBACK, admin_port),
                  "allow_paths": [{"prefix": path} for path in admin_paths]},
        "static_resources": {"listeners": listeners, "clusters": clusters},
        "overload_manager": _overload_manager(),
    }
    return yaml.safe_dump(config, sort_keys=False, width=100)


def _overload_manager() -> dict[str, Any]:
    """Limits on connections and on the heap. As the heap fills (85% to 95% of MAX_HEAP_BYTES)
    the streams holding the most buffered memory are reset, largest first; at 95% Envoy stops
    accepting new requests and connections and returns freed memory to the system."""
    heap = "envoy.resource_monitors.fixed_heap"

    def at(value: float) -> list[dict[str, Any]]:
        return [{"name": heap, "threshold": {"value": value}}]

    return {
        "refresh_interval": "0.25s",
        "resource_monitors": [
            {"name": heap, "typed_config": typed(
                "envoy.extensions.resource_monitors.fixed_heap.v3.FixedHeapConfig",
                max_heap_size_bytes=MAX_HEAP_BYTES)},
            {"name": "envoy.resource_monitors.global_downstream_max_connections",
             "typed_config": typed(
                 "envoy.extensions.resource_monitors.downstream_connections.v3."
                 "DownstreamConnectionsConfig",
                 max_active_downstream_connections=MAX_DOWNSTREAM_CONNECTIONS)},
        ],
        "actions": [
            {"name": "envoy.overload_actions.reset_high_memory_stream", "triggers": [
                {"name": heap, "scaled": {"scaling_threshold": 0.85,
                                          "saturation_threshold": 0.95}}]},
            {"name": "envoy.overload_actions.stop_accepting_requests", "triggers": at(0.95)},
            {"name": "envoy.overload_actions.stop_accepting_connections",
             "triggers": at(0.95)},
            {"name": "envoy.overload_actions.shrink_heap", "triggers": at(0.9)},
        ],
        # Streams are accounted from 1 MiB of buffered data: what reset_high_memory_stream
        # chooses among.
        "buffer_factory_config": {"minimum_account_to_track_power_of_two": 20},
    }
