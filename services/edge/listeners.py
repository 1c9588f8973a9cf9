"""The edge listener (REST/JSON and gRPC, one port) and the stats listener.

On the edge listener (HTTP/1.1 and HTTP/2) the gRPC-JSON transcoder turns every RPC with a
google.api.http annotation into REST/JSON, and gRPC passes through unchanged. gRPC errors
become HTTP codes with a google.rpc.Status JSON body, and Envoy's own errors (bad JSON,
unknown route, body too large, timeouts) get the same {code, message} shape. With an
EdgeSecurity it speaks TLS only (h2 and http/1.1 by ALPN); authentication (a rate limit per
client address, then the token) runs first, before any filter reads a body, so that a client
without a token gets its 401 without Envoy buffering or transcoding what it sent; the
authorization filters (scope, rate limit per client) sit between the transcoder and the
router, where every request, REST or gRPC, carries its gRPC method path and has been routed by
it.
"""

from __future__ import annotations

from typing import Any

from services.core.callers import CALLER_HEADER
from services.core.names import SERVICE_NAMES
from services.edge.blocks import ROUTER, socket, tls_context, tls_socket, typed
from services.edge.policy import UNARY_TIMEOUT, EdgeSecurity, TlsFiles
from services.edge.routes import edge_routes
from services.edge.security_filters import authentication_filters, authorization_filters

# Largest REST request body (a 1,000-event batch with full context maps fits); larger ones
# get 413. gRPC messages are bounded by the servers instead (16 MiB, RESOURCE_EXHAUSTED).
# Only authenticated requests are buffered, each for at most its route's timeout; Envoy's
# heap (render.MAX_HEAP_BYTES) holds 16 such bodies at once with room to spare, and its
# overload manager resets the largest streams before the heap runs out.
MAX_REQUEST_BODY_BYTES = 8 * 1024 * 1024
# Request headers, all together (a bearer token is under 1 KiB); larger ones get 431.
MAX_REQUEST_HEADERS_KB = 32
MAX_REQUEST_HEADERS = 100

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


def edge_listener(
    address: str, port: int, descriptor_path: str, streaming: list[str], trusted_hops: int,
    *, security: EdgeSecurity | None,
) -> dict[str, Any]:
    manager = {
        "stat_prefix": "edge",
        "codec_type": "AUTO",
        "use_remote_address": True,
        "xff_num_trusted_hops": trusted_hops,
        # One spelling per path before routing: RFC 3986 normalisation ("/a/../b" is "/b"),
        # "//" merged, and an escaped slash (%2F, %5C) refused with 400, so no encoding of a
        # path reaches a route, or skips one, that its plain spelling would not.
        "normalize_path": True,
        "merge_slashes": True,
        "path_with_escaped_slashes_action": "REJECT_REQUEST",
        "request_headers_timeout": "10s",
        "max_request_headers_kb": MAX_REQUEST_HEADERS_KB,
        # Clients get the x-request-id that the access log records, to quote in reports.
        "always_set_request_id_in_response": True,
        "common_http_protocol_options": {
            "idle_timeout": "3600s",
            # Every stream ends after this unless its route says otherwise (a service route
            # has its policy's timeout, a streaming one none): it bounds a REST request while
            # its body is buffered, before the transcoder routes it.
            "max_stream_duration": UNARY_TIMEOUT,
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
            "virtual_hosts": [{"name": "recsys", "domains": ["*"],
                               "routes": edge_routes(streaming, security)}],
        },
        "http_filters": [
            _strip_caller_header(),
            # Before anything reads the body: a request without a valid token ends here.
            *(authentication_filters(security) if security else []),
            {"name": "envoy.filters.http.buffer", "typed_config": typed(
                "envoy.extensions.filters.http.buffer.v3.Buffer",
                max_request_bytes=MAX_REQUEST_BODY_BYTES)},
            _transcoder(descriptor_path),
            # After the transcoder: every request has its gRPC path and gRPC route here.
            *(authorization_filters() if security else []),
            ROUTER,
        ],
    }
    return _listener("edge", address, port, manager,
                     security.listener_tls if security else None,
                     per_connection_buffer_limit_bytes=1024 * 1024)


def stats_listener(address: str, port: int) -> dict[str, Any]:
    """Prometheus stats and readiness from the admin endpoint, which stays on loopback."""
    routes: list[dict[str, Any]] = [{"match": {"path": path}, "route": {"cluster": "admin"}}
                                    for path in ("/stats/prometheus", "/ready")]
    routes.append({"match": {"prefix": "/"}, "direct_response": {"status": 404}})
    manager = {
        "stat_prefix": "stats",
        "codec_type": "AUTO",
        "route_config": {"virtual_hosts": [{"name": "stats", "domains": ["*"],
                                            "routes": routes}]},
        "http_filters": [ROUTER],
    }
    return _listener("stats", address, port, manager)


def _listener(name: str, address: str, port: int, manager: dict[str, Any],
              tls: TlsFiles | None = None, **options: Any) -> dict[str, Any]:
    chain: dict[str, Any] = {"filters": [{
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": typed("envoy.extensions.filters.network.http_connection_manager."
                              "v3.HttpConnectionManager", **manager),
    }]}
    if tls is not None:
        chain["transport_socket"] = tls_socket(
            "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            tls_context(tls, alpn=["h2", "http/1.1"]))
    return {"name": name, "address": socket(address, port), **options,
            "filter_chains": [chain]}


def _strip_caller_header() -> dict[str, Any]:
    """Removes CALLER_HEADER from what clients send: only Envoy names the caller (jwt_authn,
    from the verified token), and the services believe it only from Envoy's certificate."""
    return {"name": "envoy.filters.http.header_mutation", "typed_config": typed(
        "envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
        mutations={"request_mutations": [{"remove": CALLER_HEADER}]})}


def _transcoder(descriptor_path: str) -> dict[str, Any]:
    return {"name": "envoy.filters.http.grpc_json_transcoder", "typed_config": typed(
        "envoy.extensions.filters.http.grpc_json_transcoder.v3.GrpcJsonTranscoder",
        proto_descriptor=descriptor_path,
        services=list(SERVICE_NAMES.values()),
        # Output: lowerCamelCase names, every field present, enums by name (input accepts
        # both name styles): proto3's canonical JSON, see docs/rest-api.md.
        print_options={
            "always_print_primitive_fields": True,
            "always_print_enums_as_ints": False,
            "preserve_proto_field_names": False,
        },
        convert_grpc_status=True,
        # Path parameters are fully percent-decoded: /v1/users/a%20b/... is user "a b" (an
        # escaped slash never gets here: the connection manager refuses it).
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
    return {"name": "envoy.access_loggers.stdout", "typed_config": typed(
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
