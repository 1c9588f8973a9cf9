"""The HTTP filters that enforce an EdgeSecurity, and each route's share of them.

jwt_authn checks every call's bearer token (signature against a JWKS file, issuer, audience,
expiry) and puts its claims in the request's dynamic metadata; RBAC then asks for the route's
scope in the `scope` claim: 401 without a valid token, 403 without the scope. local_ratelimit
gives every client (the token's `sub`) its own token bucket per route, and answers 429
(RESOURCE_EXHAUSTED for gRPC) with x-ratelimit-* headers once it is empty.
"""

from __future__ import annotations

from typing import Any

from services.edge.blocks import typed
from services.edge.policy import EdgeSecurity, RoutePolicy

JWT_PROVIDER = "recsys"
JWT_FILTER = "envoy.filters.http.jwt_authn"
# Where jwt_authn puts the verified claims (dynamic metadata of JWT_FILTER); RBAC reads the
# scopes and the rate limiter the subject from there, never from a header a client could send.
JWT_PAYLOAD = "jwt_payload"
RATE_LIMIT_STAT_PREFIX = "edge_rate_limit"
# Per-client buckets kept per route (least recently used ones are dropped beyond this).
MAX_RATE_LIMITED_CLIENTS = 10_000


def security_filters(security: EdgeSecurity) -> list[dict[str, Any]]:
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
    jwt = typed(
        "envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
        providers={JWT_PROVIDER: provider},
        rules=[{"match": {"prefix": "/"}, "requires": {"provider_name": JWT_PROVIDER}}],
        requirement_map={"token": {"provider_name": JWT_PROVIDER}},
    )
    # ALLOW with no policies: nothing is allowed unless the route says so.
    rbac = typed("envoy.extensions.filters.http.rbac.v3.RBAC",
                 rules={"action": "ALLOW", "policies": {}})
    # Without a per-route bucket the filter does nothing: each service route brings its own.
    ratelimit = typed("envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
                      stat_prefix=RATE_LIMIT_STAT_PREFIX)
    return [{"name": JWT_FILTER, "typed_config": jwt},
            {"name": "envoy.filters.http.rbac", "typed_config": rbac},
            {"name": "envoy.filters.http.local_ratelimit", "typed_config": ratelimit}]


def route_security(policy: RoutePolicy) -> dict[str, Any]:
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
        JWT_FILTER: typed("envoy.extensions.filters.http.jwt_authn.v3.PerRouteConfig",
                          requirement_name="token"),
        "envoy.filters.http.rbac": typed(
            "envoy.extensions.filters.http.rbac.v3.RBACPerRoute",
            rbac={"rules": {"action": "ALLOW", "policies": {policy.scope: {
                "permissions": [{"any": True}],
                "principals": [{"metadata": scope_claim}],
            }}}}),
        "envoy.filters.http.local_ratelimit": typed(
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


def open_route() -> dict[str, Any]:
    """No token, no scope, no rate limit: for the routes that only ever answer 404."""
    return {
        JWT_FILTER: typed("envoy.extensions.filters.http.jwt_authn.v3.PerRouteConfig",
                          disabled=True),
        # An RBACPerRoute without rules turns RBAC off for the route.
        "envoy.filters.http.rbac": typed("envoy.extensions.filters.http.rbac.v3.RBACPerRoute"),
    }
