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
) -> str:
    """The Envoy bootstrap as YAML.

    `ingest`, `trainer`, `recommender` are "host:port" upstreams: an IP address is a static
    host (several, comma-separated, for replicas), a name is resolved by DNS (a headless
    Service: every ready pod). Calls go round robin to the healthy hosts, and idempotent ones
    are retried on another host when one fails as a stopping replica does.
    `descriptor_path` is where Envoy reads the descriptor set; `descriptor` is the local copy
    read here to find the streaming methods. The admin endpoint always binds 127.0.0.1;
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
        "admin": {"address": socket(LOOPBACK, admin_port)},
        "static_resources": {"listeners": listeners, "clusters": clusters},
        "overload_manager": {"resource_monitors": [{
            "name": "envoy.resource_monitors.global_downstream_max_connections",
            "typed_config": typed(
                "envoy.extensions.resource_monitors.downstream_connections.v3."
                "DownstreamConnectionsConfig",
                max_active_downstream_connections=MAX_DOWNSTREAM_CONNECTIONS),
        }]},
    }
    return yaml.safe_dump(config, sort_keys=False, width=100)
