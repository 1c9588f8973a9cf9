"""The edge as an attacker meets it, through the real Envoy: authentication before any body is
buffered, time limits on a request, a rate limit on failed authentication, one spelling per
path, token lifetime and subject, and the caller header only Envoy sets."""

from __future__ import annotations

import select
import socket
import ssl
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import jwt
import pytest

from recsys.recommender.v1 import recommender_pb2, recommender_pb2_grpc
from scripts.localstack.components import HOST
from scripts.localstack.pki import Pki
from services.core.callers import CALLER_HEADER
from services.core.names import SERVICE_NAMES
from services.edge.listeners import MAX_REQUEST_BODY_BYTES
from services.edge.policy import DEFAULT_POLICIES, RateLimit, RoutePolicy
from services.edge.tokens import AUDIENCE, ISSUER, MAX_LIFETIME_S
from tests.support.grpc_calls import client_tls, refused, secure_channel
from tests.support.secure_edge import SecureEdge, secure_edge

pytestmark = pytest.mark.integration

RECOMMEND = f"/{SERVICE_NAMES['recommender']}/Recommend"
REST_RECOMMEND = "/v1/users/u1/recommendations"
PROMOTE = f"/{SERVICE_NAMES['trainer']}/PromoteModelVersion"
ROUTE_TIMEOUT = "2s"
POLICIES = {
    **DEFAULT_POLICIES,
    RECOMMEND: RoutePolicy(scope="recommend:read", rate_limit=RateLimit(1000),
                           timeout=ROUTE_TIMEOUT),
}


@pytest.fixture(scope="module")
def edge(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureEdge]:
    with secure_edge(pki, tmp_path_factory.mktemp("envoy"), policies=POLICIES) as running:
        yield running


def _tls_socket(edge: SecureEdge) -> ssl.SSLSocket:
    context = ssl.create_default_context(cafile=str(edge.pki.ca_cert))
    context.set_alpn_protocols(["http/1.1"])
    raw = socket.create_connection((HOST, edge.envoy.port), timeout=30)
    return context.wrap_socket(raw, server_hostname="localhost")


def _status(conn: ssl.SSLSocket) -> tuple[int, str]:
    """The status code and header block of the HTTP/1.1 response on `conn`."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    head = data.split(b"\r\n\r\n", 1)[0].decode(errors="replace")
    return int(head.split(" ", 2)[1]), head.lower()


def _post_large_body(edge: SecureEdge, size: int) -> int:
    """POST a `size`-byte body without a token, a chunk at a time, stopping as soon as Envoy
    answers; the HTTP status it answered."""
    chunk = b"x" * (256 * 1024)
    with _tls_socket(edge) as conn:
        conn.sendall((f"POST /v1/interactions:batchCreate HTTP/1.1\r\nhost: localhost\r\n"
                      f"content-type: application/json\r\ncontent-length: {size}\r\n\r\n")
                     .encode())
        sent = 0
        while sent < size and not select.select([conn], [], [], 0)[0]:
            try:
                conn.sendall(chunk[:size - sent])
            except OSError:  # Envoy answered and closed while we were sending
                break
            sent += len(chunk)
        return _status(conn)[0]


def test_large_unauthenticated_bodies_get_401_without_envoy_buffering_them(
    edge: SecureEdge,
) -> None:
    """Many near-limit bodies at once, none with a token: each is refused from its headers,
    so Envoy's heap does not grow by what they carry (24 x 8 MiB)."""
    clients = 24
    denied = 'envoy_http_jwt_authn_denied{envoy_http_conn_manager_prefix="edge"}'
    before_heap, before_denied = edge.heap_bytes(), edge.stat(denied)
    with ThreadPoolExecutor(clients) as pool:
        statuses = list(pool.map(lambda _: _post_large_body(edge, MAX_REQUEST_BODY_BYTES),
                                 range(clients)))
    assert statuses == [401] * clients
    assert edge.stat(denied) == before_denied + clients
    grown = edge.heap_bytes() - before_heap
    assert grown < 32 * 1024 * 1024, f"Envoy's heap grew by {grown / 2**20:.0f} MiB"


def test_a_request_whose_body_never_ends_is_cut_at_the_routes_timeout(
    edge: SecureEdge,
) -> None:
    """Headers and 5 bytes of a 100-byte gRPC body, then nothing: the route's time limit
    covers receiving the request too, so Envoy ends the exchange instead of waiting."""
    token = edge.token("recommend:read")
    with _tls_socket(edge) as conn:
        conn.sendall((f"POST {RECOMMEND} HTTP/1.1\r\nhost: localhost\r\n"
                      f"content-type: application/grpc\r\nte: trailers\r\n"
                      f"authorization: Bearer {token}\r\ncontent-length: 100\r\n\r\n")
                     .encode() + b"\x00\x00\x00\x00\x5f")
        status, head = _status(conn)
    assert status == 408 or "grpc-status: 4" in head, head


def test_a_rest_body_that_never_ends_is_cut_while_it_is_buffered(edge: SecureEdge) -> None:
    """Before the transcoder routes a REST request its body is buffered: the listener's
    stream limit (the unary timeout) ends a body that does not come."""
    token = edge.token("ingest:write")
    with _tls_socket(edge) as conn:
        conn.sendall((f"POST /v1/interactions:batchCreate HTTP/1.1\r\nhost: localhost\r\n"
                      f"content-type: application/json\r\ncontent-length: 1000\r\n"
                      f"authorization: Bearer {token}\r\n\r\n").encode() + b'{"inter')
        status, head = _status(conn)
    assert status == 408, head


def test_failed_authentication_is_rate_limited_per_client_address(
    pki: Pki, tmp_path: Path,
) -> None:
    limit = 3
    with secure_edge(pki, tmp_path / "envoy", policies=DEFAULT_POLICIES,
                     per_address=RateLimit(limit, interval_s=3600)) as limited:
        rest = limited.rest(None)
        statuses = [rest.get("/v1/model").status for _ in range(limit + 2)]
        assert statuses == [401] * limit + [429] * 2
        # The address is spent: a valid token does not help it for this hour.
        assert limited.rest(limited.token("recommend:read")).get("/v1/model").status == 429


# -- paths: one spelling each ---------------------------------------------------------------

# A path → what a caller with a recommend:read token gets: no spelling reaches the trainer.
PROMOTE_SPELLINGS = {
    "/v1/modelVersions/1:promote": 403,  # the plain path: the route's scope is admin
    "//v1/modelVersions/1:promote": 403,  # slashes merged: the same route
    "/v1//modelVersions/1:promote": 403,
    "/v1/x/../modelVersions/1:promote": 403,  # dot segments resolved: the same route
    "/v1/./modelVersions/1:promote": 403,
    "/v1/modelVersions%2F1:promote": 400,  # an escaped slash is refused
    "/v1/modelVersions/1%2F..%2F2:promote": 400,
    "/v1/modelVersions/1%5C..%5C2:promote": 400,
    "/v1/modelVersions/1:promote/": 404,  # another path: no route
    "/V1/modelVersions/1:promote": 404,  # case matters: no route
}


@pytest.mark.parametrize("path", list(PROMOTE_SPELLINGS))
def test_no_spelling_of_a_path_gets_past_its_routes_checks(edge: SecureEdge, path: str) -> None:
    assert edge.rest(None).post(path).status in (400, 401), path
    reply = edge.rest(edge.token("recommend:read")).post(path, {})
    assert reply.status == PROMOTE_SPELLINGS[path], (path, reply.body)


GRPC_SPELLINGS = [
    PROMOTE.replace("/Promote", "//Promote"),
    "/" + PROMOTE,
    PROMOTE.replace("/Promote", "/./Promote"),
    PROMOTE.replace("/Promote", "/x/../Promote"),
    PROMOTE.replace("/Promote", "%2FPromote"),
    PROMOTE + "/",
    PROMOTE.upper(),
]


@pytest.mark.parametrize("path", GRPC_SPELLINGS)
def test_no_spelling_of_a_grpc_method_reaches_the_service_without_its_scope(
    edge: SecureEdge, path: str,
) -> None:
    """The trainer's address has no server: reaching it would be UNAVAILABLE."""
    for token in (None, edge.token("recommend:read")):
        with edge.channel(token) as channel:
            call = channel.unary_unary(path, request_serializer=lambda _: b"",
                                       response_deserializer=lambda data: data)
            code = refused(lambda c=call: c(b"", timeout=10))
        assert code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED,
                        grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.INTERNAL), (path, code)


# -- tokens ---------------------------------------------------------------------------------


def _signed(edge: SecureEdge, claims: dict[str, object]) -> str:
    """A token signed with the edge's key, with exactly these claims (no defaults added)."""
    from services.cli.token import load_signing_key, public_jwk

    key = load_signing_key(edge.pki.signing_key)
    return jwt.encode(claims, key, algorithm="ES256",
                      headers={"kid": public_jwk(key.public_key())["kid"]})


def _claims(**changes: object) -> dict[str, object]:
    now = int(time.time())
    claims: dict[str, object] = {"iss": ISSUER, "aud": AUDIENCE, "sub": "claims-test",
                                 "scope": "recommend:read", "iat": now, "exp": now + 600}
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def test_a_token_that_lives_too_long_is_refused(edge: SecureEdge) -> None:
    now = int(time.time())
    token = _signed(edge, _claims(exp=now + MAX_LIFETIME_S + 3600))
    reply = edge.rest(token).get(REST_RECOMMEND)
    assert reply.status == 401, reply.body
    assert edge.rest(_signed(edge, _claims())).get(REST_RECOMMEND).status == 200
    assert edge.rest(_signed(edge, _claims(exp=now + MAX_LIFETIME_S))).get(
        REST_RECOMMEND).status == 200


def test_a_token_without_a_subject_is_forbidden(edge: SecureEdge) -> None:
    """A subject names the client's own bucket: without one there is none to share."""
    reply = edge.rest(_signed(edge, _claims(sub=None))).get(REST_RECOMMEND)
    assert (reply.status, reply.body) == (403, {"code": 7, "message": "RBAC: access denied"})
    with edge.channel(_signed(edge, _claims(sub=None))) as channel:
        stub = recommender_pb2_grpc.RecommenderServiceStub(channel)
        assert refused(lambda: stub.Recommend(recommender_pb2.RecommendRequest(user_id="u1"),
                                              timeout=10)) == grpc.StatusCode.PERMISSION_DENIED


# -- the caller, as the services learn it ---------------------------------------------------


def _whoami(channel: grpc.Channel, metadata: tuple[tuple[str, str], ...] = ()) -> str:
    stub = recommender_pb2_grpc.RecommenderServiceStub(channel)
    reply = stub.Recommend(recommender_pb2.RecommendRequest(user_id="whoami"), timeout=10,
                           metadata=metadata)
    return reply.model_version


def test_the_service_learns_the_token_subject_and_no_client_can_claim_another(
    edge: SecureEdge, pki: Pki,
) -> None:
    forged = ((CALLER_HEADER, "mallory"),)
    with edge.channel(edge.token("recommend:read", subject="alice")) as channel:
        assert _whoami(channel) == "alice via envoy"
        assert _whoami(channel, forged) == "alice via envoy"
    # Straight to the service: the header counts only from Envoy's certificate.
    with secure_channel(f"{HOST}:{edge.probe.port}", client_tls(pki, cert=pki)) as direct:
        assert _whoami(direct, forged) == "recsys-admin"
