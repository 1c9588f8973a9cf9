"""Envoy at the edge: the one source of its configuration.

Every Envoy the project runs (the local stack, the tests, docker-compose.yml, Kubernetes) is
rendered from here, so all run the same listener, routes and clusters:

- one listener (HTTP/1.1 and HTTP/2) where the gRPC-JSON transcoder turns every RPC with a
  google.api.http annotation into REST/JSON, and gRPC passes through unchanged; one route per
  service serves both; everything else (health, reflection, unknown paths) is a 404;
- gRPC errors become HTTP codes with a google.rpc.Status JSON body, and Envoy's own errors get
  the same {code, message} shape;
- upstream clusters speak HTTP/2, are health-checked over grpc.health.v1 and eject hosts that
  keep failing;
- with an EdgeSecurity: TLS on the listener, a token with the route's scope on every call,
  per-client rate limits, and optionally mutual TLS to the upstreams.

    render.py            render_envoy_config: the bootstrap, from addresses and a security
    listeners.py         the edge listener (transcoder, error replies, access log), stats
    routes.py            service, method and 404 routes
    security_filters.py  jwt_authn, RBAC and local_ratelimit, and each route's share
    clusters.py          the upstream gRPC clusters
    policy.py            RateLimit, RoutePolicy, EdgeSecurity, DEFAULT_POLICIES
    tokens.py            the issuer, audience and scopes of access tokens
    profiles.py          the local, Compose and Kubernetes renders
    __main__.py          python -m services.edge: render one of them

docs/rest-api.md documents what clients see. Only `services.core`, the generated contracts
and third-party libraries are imported here; no service imports this package.
"""
