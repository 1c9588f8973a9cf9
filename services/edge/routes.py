"""The edge listener's routes: one per service, one per streaming or overridden method, and
404 for everything else.

The transcoder rewrites a REST request's path to its gRPC path before routing, so one route
per service serves both protocols, and each policy (services.edge.policy) is attached once per
service route, or per method for overrides. A service route retries its idempotent methods on
another replica (services.edge.retries). Health, reflection and unknown gRPC paths are 404s,
which need no token; a REST path needs one (authentication runs before the transcoder knows
whether the path exists).
"""

from __future__ import annotations

from typing import Any

from services.core.names import SERVICE_NAMES
from services.edge.blocks import typed
from services.edge.policy import UNARY_TIMEOUT, EdgeSecurity, service_of
from services.edge.retries import retry_policy
from services.edge.security_filters import open_route, route_security, unknown_rest_route

# Streaming calls (gRPC only: bulk ingest, watching a training job) have no overall limit but
# are cut after this long without a message in either direction.
STREAM_IDLE_TIMEOUT = "300s"

# The buffer filter runs before the transcoder, while a REST request still has its REST path
# and so matches only the last route: REST bodies are bounded there, whereas gRPC requests
# match the gRPC routes, where buffering is off, and stream through.
_UNBUFFERED = {"envoy.filters.http.buffer": typed(
    "envoy.extensions.filters.http.buffer.v3.BufferPerRoute", disabled=True)}


def edge_routes(streaming: list[str], security: EdgeSecurity | None) -> list[dict[str, Any]]:
    """Every route of the edge listener, in match order; `streaming` are the gRPC paths of
    the streaming methods."""

    def service_route(match: dict[str, Any], service: str, key: str,
                      stream: bool) -> dict[str, Any]:
        policy = security.policy(key) if security else None
        timeout = policy.timeout if policy else UNARY_TIMEOUT
        action: dict[str, Any] = {"cluster": service}
        if stream:  # no overall limit: 0s also lifts the listener's max_stream_duration
            action |= {"timeout": "0s", "idle_timeout": STREAM_IDLE_TIMEOUT,
                       "max_stream_duration": {"max_stream_duration": "0s"}}
        else:
            # Honour the client's grpc-timeout, capped at the route's timeout; the whole
            # exchange, receiving the request body included, ends at the timeout too (a client
            # that sends its body slowly cannot hold a stream and its buffer longer).
            action |= {"timeout": timeout,
                       "max_stream_duration": {"max_stream_duration": timeout,
                                               "grpc_timeout_header_max": timeout}}
            if retries := retry_policy(service):
                action["retry_policy"] = retries
        filters = dict(_UNBUFFERED)
        if policy is not None:
            filters |= route_security(policy)
        return {"match": match, "route": action, "typed_per_filter_config": filters}

    overrides = sorted(k for k in (security.policies if security else {}) if k.startswith("/"))
    routes: list[dict[str, Any]] = [
        service_route({"path": path}, service_of(path), path, path in streaming)
        for path in sorted({*streaming, *overrides})
    ]
    routes += [service_route({"prefix": f"/{full_name}/"}, name, name, False)
               for name, full_name in SERVICE_NAMES.items()]
    # Any other gRPC path, grpc.health.v1 and reflection included, is not exposed at the edge;
    # unbuffered too, or a client stream that never ends would wait forever for its answer.
    # No token is needed to learn that a route does not exist.
    not_found = {"status": 404, "body": {"inline_string": "no such route"}}
    unsecured = open_route() if security else {}
    routes.append({"match": {"prefix": "/", "grpc": {}}, "direct_response": not_found,
                   "typed_per_filter_config": {**_UNBUFFERED, **unsecured}})
    # REST before transcoding: the transcoder routes a known path to its service's route and
    # leaves an unknown one here. With security, a token is checked on this route first.
    rest: dict[str, Any] = {"match": {"prefix": "/"}, "direct_response": not_found}
    if security is not None:
        rest["typed_per_filter_config"] = unknown_rest_route()
    routes.append(rest)
    return routes
