"""The route security policy: who may call each route, how often, and for how long.

A policy is attached per service (every method of it) or per gRPC method path
("/pkg.Service/Method", overriding its service's). Rates are per client (the token's `sub`)
and per Envoy replica.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from services.core.names import SERVICE_NAMES
from services.edge import tokens

# A unary call may take this long at most; a client's shorter grpc-timeout wins.
UNARY_TIMEOUT = "10s"


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
    timeout: str = UNARY_TIMEOUT  # unary calls; streams have none (routes.STREAM_IDLE_TIMEOUT)


# By short service name (every method of the service), or by gRPC method path to override one
# method.
DEFAULT_POLICIES: Mapping[str, RoutePolicy] = MappingProxyType({
    "ingest": RoutePolicy(scope=tokens.INGEST_WRITE, rate_limit=RateLimit(200, burst=400)),
    "trainer": RoutePolicy(scope=tokens.ADMIN, rate_limit=RateLimit(20, burst=40)),
    "recommender": RoutePolicy(scope=tokens.RECOMMEND_READ,
                               rate_limit=RateLimit(500, burst=1000)),
})


# Every request from one client address, before its token is checked (so failed
# authentication too): well above what the routes' own buckets let one subject send.
PER_ADDRESS = RateLimit(2000, burst=4000)


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
    issuer: str = tokens.ISSUER
    audiences: tuple[str, ...] = (tokens.AUDIENCE,)
    upstream_tls: TlsFiles | None = None  # client certificate + CA (required) for mTLS
    policies: Mapping[str, RoutePolicy] = field(default_factory=lambda: DEFAULT_POLICIES)
    per_address: RateLimit = PER_ADDRESS  # every request of a client address, token or not

    def __post_init__(self) -> None:
        missing = [name for name in SERVICE_NAMES if name not in self.policies]
        if missing:  # fail closed: a service route without a policy would be open
            raise ValueError(f"no route policy for {', '.join(missing)}")
        if self.upstream_tls is not None and self.upstream_tls.ca is None:
            raise ValueError("upstream_tls needs a CA to verify the services")

    def policy(self, path_or_service: str) -> RoutePolicy:
        """The policy of a method path, else of the service it belongs to."""
        if path_or_service in self.policies:
            return self.policies[path_or_service]
        return self.policies[service_of(path_or_service)]


def service_of(path: str) -> str:
    """The short name of the service a gRPC method path ("/pkg.Service/Method") calls."""
    full_name = path.split("/")[1]
    return next(name for name, full in SERVICE_NAMES.items() if full == full_name)
