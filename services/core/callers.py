"""Who is calling, and whether they may: the identity of each RPC's caller, and the allow-list.

With mutual TLS a caller is its client certificate's identity (its DNS names, else its common
name), never just "signed by our CA". Envoy calls on behalf of end users: it puts the subject
of the token it verified in CALLER_HEADER (after removing any copy a client sent), and that
header is believed only from a certificate listed as the edge. Without mutual TLS nobody is
identified and the allow-list is not enforced (plaintext is for tests and local debugging).

The authorization interceptor (services.core.interceptors) checks `CallerPolicy` before each
RPC and makes the caller available to the handler through `current_caller()`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from services.core.names import ADMIN_METHODS

# Set by Envoy from the verified token's `sub`; only a caller in CallerPolicy.edge may send it.
CALLER_HEADER = "x-recsys-caller"
HEALTH_PREFIX = "/grpc.health.v1.Health/"


@dataclass(frozen=True)
class Caller:
    """The client certificate's identity (`peer`), and the end user it speaks for."""

    peer: str | None  # None: no client certificate (plaintext, or TLS without mutual TLS)
    subject: str | None = None  # the token subject Envoy verified; only with an edge peer

    def __str__(self) -> str:
        if self.peer is None:
            return "anonymous"
        return self.peer if self.subject is None else f"{self.subject} via {self.peer}"


ANONYMOUS = Caller(peer=None)
_current: ContextVar[Caller] = ContextVar("recsys_caller", default=ANONYMOUS)


def current_caller() -> Caller:
    """The caller of the RPC being handled (ANONYMOUS without mutual TLS)."""
    return _current.get()


@dataclass(frozen=True, kw_only=True)
class CallerPolicy:
    """Which client certificate identities may call what.

    Health: any certificate the CA signed (Envoy's health checks, probes through the mesh).
    ADMIN_METHODS (training jobs started or cancelled, promotion): `admins`. Every other RPC,
    reflection included: `callers`. `edge` lists the identities whose CALLER_HEADER is
    believed.
    """

    callers: frozenset[str]
    admins: frozenset[str]
    edge: frozenset[str]

    @classmethod
    def of(cls, *, callers: Iterable[str], admins: Iterable[str],
           edge: Iterable[str]) -> CallerPolicy:
        return cls(callers=frozenset(callers), admins=frozenset(admins), edge=frozenset(edge))

    def permits(self, method: str, identities: Iterable[str]) -> bool:
        """Whether a certificate with `identities` may call `method` ("/pkg.Service/Method")."""
        if method.startswith(HEALTH_PREFIX):
            return True
        allowed = self.admins if method in ADMIN_METHODS else self.callers
        return not allowed.isdisjoint(identities)

    def caller(self, identities: list[str], subject: str | None) -> Caller:
        """The caller with these certificate identities; `subject` is the CALLER_HEADER value,
        kept only when the peer is the edge."""
        if not identities:
            return ANONYMOUS
        edge = next((name for name in identities if name in self.edge), None)
        if edge is not None and subject:
            return Caller(peer=edge, subject=subject)
        return Caller(peer=identities[0])


@contextmanager
def acting_as(caller: Caller) -> Iterator[None]:
    """`caller` is `current_caller()` inside (the interceptor wraps each RPC in it)."""
    token = _current.set(caller)
    try:
        yield
    finally:
        _current.reset(token)
