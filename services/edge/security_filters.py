"""The HTTP filters that enforce an EdgeSecurity, and each route's share of them.

Authentication comes first, before anything buffers or transcodes a body: a rate limit per
client address (so failed authentication is limited too), then jwt_authn, which checks every
call's bearer token (signature against a JWKS file, issuer, audience, expiry, lifetime), puts
its claims in the request's dynamic metadata and the subject in CALLER_HEADER for the
services. After the transcoder (every request has its gRPC route there) RBAC asks for the
route's scope in the `scope` claim and for a subject: 401 without a valid token, 403 without
the scope or a `sub`. local_ratelimit then gives every client (the token's `sub`) its own token
bucket per route, and answers 429 (RESOURCE_EXHAUSTED for gRPC) with x-ratelimit-* headers
once it is empty.
"""

from __future__ import annotations

from typing import Any

from services.core.callers import CALLER_HEADER
from services.edge.blocks import typed
from services.edge.policy import EdgeSecurity, RateLimit, RoutePolicy
from services.edge.tokens import MAX_LIFETIME_S

JWT_PROVIDER = "recsys"
JWT_FILTER = "envoy.filters.http.jwt_authn"
# Where jwt_authn puts the verified claims (dynamic metadata of JWT_FILTER); RBAC reads the
# scopes and the rate limiter the subject from there, never from a header a client could send.
JWT_PAYLOAD = "jwt_payload"
RATE_LIMIT_STAT_PREFIX = "edge_rate_limit"
ADDRESS_LIMIT_FILTER = "recsys.address_rate_limit"
ADDRESS_LIMIT_STAT_PREFIX = "edge_address_rate_limit"
# Per-client buckets kept per route (least recently used ones are dropped beyond this).
MAX_RATE_LIMITED_CLIENTS = 10_000


def authentication_filters(security: EdgeSecurity) -> list[dict[str, Any]]:
    """The rate limit per client address, then jwt_authn: before any filter that reads a body.

    jwt_authn is closed by default (a token on every route) and opened only on the routes that
    answer 404 to gRPC; REST paths are still untranscoded here, so every REST request needs a
    token, even for a path that does not exist.
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
        # A client sends the same token call after call: its signature is verified once and
        # the token kept (expiry and lifetime are checked again on every use).
        "jwt_cache_config": {"jwt_cache_size": 1000},
        # The token stops at the edge; the services trust Envoy's route.
        "forward": False,
        "payload_in_metadata": JWT_PAYLOAD,
        # exp - iat at most this: a leaked token is not valid for long.
        "max_lifetime": f"{MAX_LIFETIME_S}s",
        # Who the services are called for; jwt_authn overwrites a copy the client sent, and
        # the edge listener removes one from any request before (see listeners.py).
        "claim_to_headers": [{"header_name": CALLER_HEADER, "claim_name": "sub"}],
        # "a b c" becomes ["a", "b", "c"], which RBAC matches one scope at a time.
        "normalize_payload_in_metadata": {"space_delimited_claims": ["scope"]},
    }
    jwt = typed(
        "envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
        providers={JWT_PROVIDER: provider},
        rules=[{"match": {"prefix": "/"}, "requires": {"provider_name": JWT_PROVIDER}}],
        requirement_map={"token": {"provider_name": JWT_PROVIDER}},
    )
    return [{"name": ADDRESS_LIMIT_FILTER, "typed_config": _address_limit(security.per_address)},
            {"name": JWT_FILTER, "typed_config": jwt}]


def authorization_filters() -> list[dict[str, Any]]:
    """RBAC on the token's claims, then the per-client rate limit: after the transcoder.

    RBAC is closed by default (no permission) and opened per route: a route without a policy
    can only be a 404.
    """
    # ALLOW with no policies: nothing is allowed unless the route says so.
    rbac = typed("envoy.extensions.filters.http.rbac.v3.RBAC",
                 rules={"action": "ALLOW", "policies": {}})
    # Without a per-route bucket the filter does nothing: each service route brings its own.
    ratelimit = typed("envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
                      stat_prefix=RATE_LIMIT_STAT_PREFIX)
    return [{"name": "envoy.filters.http.rbac", "typed_config": rbac},
            {"name": "envoy.filters.http.local_ratelimit", "typed_config": ratelimit}]


def _address_limit(limit: RateLimit) -> dict[str, Any]:
    """A token bucket per client address for every request, before its token is checked, so
    a client that fails authentication (401) is limited as well as one that succeeds."""
    bucket = limit.bucket()
    enabled = {"default_value": {"numerator": 100, "denominator": "HUNDRED"},
               "runtime_key": "edge_address_rate_limit_enabled"}
    return typed(
        "envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
        stat_prefix=ADDRESS_LIMIT_STAT_PREFIX,
        token_bucket=bucket,
        descriptors=[{"entries": [{"key": "remote_address"}], "token_bucket": bucket}],
        max_dynamic_descriptors=MAX_RATE_LIMITED_CLIENTS,
        rate_limits=[{"actions": [{"remote_address": {}}]}],
        filter_enabled=enabled,
        filter_enforced={**enabled, "runtime_key": "edge_address_rate_limit_enforced"},
        rate_limited_as_resource_exhausted=True,
    )


def route_security(policy: RoutePolicy) -> dict[str, Any]:
    """A service route's token requirement, scope and per-client rate limit."""
    scope_claim = {"filter": JWT_FILTER, "path": [{"key": JWT_PAYLOAD}, {"key": "scope"}],
                   "value": {"list_match": {"one_of": {"string_match": {"exact": policy.scope}}}}}
    # Every token names its client: rate limits are per subject, and no token shares a bucket.
    subject_claim = {"filter": JWT_FILTER, "path": [{"key": JWT_PAYLOAD}, {"key": "sub"}],
                     "value": {"string_match": {"safe_regex": {"regex": ".+"}}}}
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
                "principals": [{"and_ids": {"ids": [{"metadata": scope_claim},
                                                    {"metadata": subject_claim}]}}],
            }}}}),
        "envoy.filters.http.local_ratelimit": typed(
            "envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
            stat_prefix=RATE_LIMIT_STAT_PREFIX,
            # Required by the filter; unused, since RBAC lets no call without a subject through
            # and every subject gets a bucket of its own.
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


def unknown_rest_route() -> dict[str, Any]:
    """A REST path before transcoding: a token (jwt_authn runs first), no scope or limit (the
    transcoder routes a known path to its service's route, where they apply)."""
    return {
        JWT_FILTER: typed("envoy.extensions.filters.http.jwt_authn.v3.PerRouteConfig",
                          requirement_name="token"),
        "envoy.filters.http.rbac": typed("envoy.extensions.filters.http.rbac.v3.RBACPerRoute"),
    }


def open_route() -> dict[str, Any]:
    """No token, no scope, no rate limit: for the gRPC routes that only ever answer 404."""
    return {
        JWT_FILTER: typed("envoy.extensions.filters.http.jwt_authn.v3.PerRouteConfig",
                          disabled=True),
        # An RBACPerRoute without rules turns RBAC off for the route.
        "envoy.filters.http.rbac": typed("envoy.extensions.filters.http.rbac.v3.RBACPerRoute"),
    }
