"""Security at the edge, through the real Envoy: TLS, tokens, scopes, rate limits, size limits.

The recommender upstream is the runtime's probe service with mutual TLS on (Envoy presents
its client certificate); nothing listens at ingest's and trainer's addresses, so a call that
passes authentication there ends as 503 / UNAVAILABLE, one that does not as 401 or 403
(tests/support/secure_edge.py).
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import jwt
import pytest
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc

from recsys.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from recsys.recommender.v1 import recommender_pb2, recommender_pb2_grpc
from recsys.trainer.v1 import trainer_pb2, trainer_pb2_grpc
from scripts.localstack.components import HOST, VENV_BIN
from scripts.localstack.pki import Pki
from services.core.names import SERVICE_NAMES
from services.edge.descriptor import DESCRIPTOR
from services.edge.listeners import MAX_REQUEST_BODY_BYTES, MAX_REQUEST_HEADERS_KB
from services.edge.policy import DEFAULT_POLICIES, RateLimit, RoutePolicy
from services.edge.tokens import SCOPES
from tests.support.grpc_calls import client_tls, refused, secure_channel
from tests.support.secure_edge import SecureEdge, secure_edge

pytestmark = pytest.mark.integration

BURST = 5  # the recommender's bucket per client here: 5 calls, then one an hour
SIMILAR = f"/{SERVICE_NAMES['recommender']}/SimilarItems"
POLICIES = {
    **DEFAULT_POLICIES,
    "recommender": RoutePolicy(scope="recommend:read",
                               rate_limit=RateLimit(1, interval_s=3600, burst=BURST)),
    # A per-method override: its own bucket, another size.
    SIMILAR: RoutePolicy(scope="recommend:read", rate_limit=RateLimit(2, interval_s=3600)),
}


@pytest.fixture(scope="module")
def secure(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureEdge]:
    with secure_edge(pki, tmp_path_factory.mktemp("envoy"), policies=POLICIES) as edge:
        yield edge


RECOMMEND = "/v1/users/u1/recommendations"


def _recommend(channel: grpc.Channel) -> recommender_pb2.RecommendResponse:
    stub = recommender_pb2_grpc.RecommenderServiceStub(channel)
    return stub.Recommend(recommender_pb2.RecommendRequest(user_id="u1"), timeout=10)


# -- authentication: 401 / UNAUTHENTICATED ------------------------------------------------------


def _tampered(token: str) -> str:
    """The same token with `scope` widened: its signature no longer matches."""
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["scope"] = "admin ingest:write recommend:read"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


def _unsigned(token: str) -> str:
    """The same claims with alg "none" and no signature."""
    claims = jwt.decode(token, options={"verify_signature": False})
    header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{payload}."


def bad_tokens(edge: SecureEdge, foreign: Pki) -> dict[str, tuple[str | None, str]]:
    """What is wrong → (token, the start of Envoy's message)."""
    good = edge.token("recommend:read")
    return {
        "no token": (None, "Jwt is missing"),
        "expired": (edge.token("recommend:read", now=time.time() - 7200), "Jwt is expired"),
        "not yet valid": (edge.token("recommend:read", now=time.time() + 3600),
                          "Jwt not yet valid"),
        "tampered": (_tampered(good), "Jwt verification fails"),
        "signed by another key": (foreign.mint_token(["recommend:read"]),
                                  "Jwks doesn't have key"),
        "unsigned": (_unsigned(good), "Jwt is not in the form"),
        "another issuer": (edge.token("recommend:read", issuer="evil"),
                           "Jwt issuer is not configured"),
        "not a JWT": ("hello", "Jwt is not in the form of Header.Payload.Signature"),
    }


def test_requests_without_a_valid_token_get_401(secure: SecureEdge, foreign_pki: Pki) -> None:
    for what, (token, message) in bad_tokens(secure, foreign_pki).items():
        reply = secure.rest(token).get(RECOMMEND)
        assert reply.status == 401, (what, reply.body)
        assert reply.body["code"] == grpc.StatusCode.UNAUTHENTICATED.value[0], what
        assert reply.body["message"].startswith(message), (what, reply.body)
        assert reply.headers["www-authenticate"].startswith("Bearer"), what


def test_grpc_calls_without_a_valid_token_are_unauthenticated(
    secure: SecureEdge, foreign_pki: Pki
) -> None:
    for what, (token, message) in bad_tokens(secure, foreign_pki).items():
        with secure.channel(token) as channel, pytest.raises(grpc.RpcError) as raised:
            _recommend(channel)
        assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED, what
        assert (raised.value.details() or "").startswith(message), what


def test_a_token_for_another_api_is_forbidden(secure: SecureEdge) -> None:
    """Well signed, but for another audience: Envoy answers 403, as for a missing scope."""
    token = secure.token("recommend:read", audience="other-api")
    reply = secure.rest(token).get(RECOMMEND)
    assert (reply.status, reply.body) == (403, {"code": 7,
                                                "message": "Audiences in Jwt are not allowed"})
    with secure.channel(token) as channel:
        assert refused(lambda: _recommend(channel)) == grpc.StatusCode.PERMISSION_DENIED


def test_a_token_in_the_query_string_is_not_accepted(secure: SecureEdge) -> None:
    token = secure.token("recommend:read")
    reply = secure.rest(None).get(f"{RECOMMEND}?access_token={token}")
    assert reply.status in (400, 401), reply.body  # never 200: tokens stay out of URLs


# -- authorisation: 403 / PERMISSION_DENIED -----------------------------------------------------

# route → (scope it needs, REST call, gRPC call)
Grpc = Callable[[grpc.Channel], Any]
ROUTES: dict[str, tuple[str, tuple[str, str, Any], Grpc]] = {
    "ingest": ("ingest:write", ("POST", "/v1/interactions", {}),
               lambda c: ingest_pb2_grpc.IngestServiceStub(c).CreateInteraction(
                   ingest_pb2.CreateInteractionRequest(), timeout=10)),
    "trainer": ("admin", ("GET", "/v1/trainingJobs", None),
                lambda c: trainer_pb2_grpc.TrainerServiceStub(c).ListTrainingJobs(
                    trainer_pb2.ListTrainingJobsRequest(), timeout=10)),
    "promotion": ("admin", ("POST", "/v1/modelVersions/1:promote", {}),
                  lambda c: trainer_pb2_grpc.TrainerServiceStub(c).PromoteModelVersion(
                      trainer_pb2.PromoteModelVersionRequest(version="1"), timeout=10)),
    "recommender": ("recommend:read", ("GET", "/v1/users/u1/recommendations", None),
                    _recommend),
}


@pytest.mark.parametrize("route", list(ROUTES))
@pytest.mark.parametrize("scope", SCOPES)
def test_each_route_needs_its_scope_over_rest_and_grpc(
    secure: SecureEdge, route: str, scope: str
) -> None:
    needed, (method, path, body), call = ROUTES[route]
    token = secure.token(scope)
    reply = secure.rest(token).request(method, path, body)
    with secure.channel(token) as channel:
        try:
            call(channel)
            code = grpc.StatusCode.OK
        except grpc.RpcError as exc:
            code = exc.code()
    if scope != needed:
        assert (reply.status, reply.body) == (403, {"code": 7, "message": "RBAC: access denied"})
        assert code == grpc.StatusCode.PERMISSION_DENIED
    elif route == "recommender":  # the probe answers
        assert (reply.status, code) == (200, grpc.StatusCode.OK), reply.body
    else:  # past the edge's checks, to an upstream that is down
        assert reply.status == 503, reply.body
        assert code == grpc.StatusCode.UNAVAILABLE


def test_a_token_with_several_scopes_opens_each_route(secure: SecureEdge) -> None:
    rest = secure.rest(secure.token(*SCOPES))
    assert rest.get("/v1/trainingJobs").status == 503  # authorised; the trainer is down
    assert rest.get(RECOMMEND).status == 200


# -- the right token: the same answer as before -------------------------------------------------


def test_the_right_token_gets_the_same_answer_as_the_service_gives_directly(
    secure: SecureEdge, pki: Pki
) -> None:
    with secure_channel(f"{HOST}:{secure.probe.port}", client_tls(pki, cert=pki)) as direct:
        expected = _recommend(direct)
    token = secure.token("recommend:read")
    reply = secure.rest(token).get(RECOMMEND)
    assert reply.status == 200
    assert reply.body == json_format.MessageToDict(
        expected, always_print_fields_with_no_presence=True)
    with secure.channel(token) as channel:
        assert _recommend(channel) == expected


# -- rate limits: 429 / RESOURCE_EXHAUSTED ------------------------------------------------------


def _rate_limited(edge: SecureEdge) -> float:
    for line in edge.stats().splitlines():
        if line.startswith("envoy_http_local_rate_limit_rate_limited"
                           '{envoy_local_http_ratelimit_prefix="edge_rate_limit"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_burst_above_the_limit_gets_429_with_rate_limit_headers(secure: SecureEdge) -> None:
    before = _rate_limited(secure)
    rest = secure.rest(secure.token("recommend:read"))
    replies = [rest.get(RECOMMEND) for _ in range(BURST + 2)]
    assert [r.status for r in replies] == [200] * BURST + [429] * 2
    assert [r.headers["x-ratelimit-remaining"] for r in replies[:BURST]] == [
        str(n) for n in range(BURST - 1, -1, -1)]
    limited = replies[-1]
    assert limited.body == {"code": grpc.StatusCode.RESOURCE_EXHAUSTED.value[0],
                            "message": "local_rate_limited"}
    assert limited.headers["x-ratelimit-limit"] == str(BURST)
    assert limited.headers["x-ratelimit-remaining"] == "0"
    assert int(limited.headers["x-ratelimit-reset"]) > 0
    assert _rate_limited(secure) == before + 2
    # Another client, another bucket.
    assert secure.rest(secure.token("recommend:read")).get(RECOMMEND).status == 200


def test_a_grpc_burst_above_the_limit_is_resource_exhausted(secure: SecureEdge) -> None:
    with secure.channel(secure.token("recommend:read")) as channel:
        for _ in range(BURST):
            _recommend(channel)
        assert refused(lambda: _recommend(channel)) == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_limits_are_per_route(secure: SecureEdge) -> None:
    rest = secure.rest(secure.token("recommend:read"))
    similar = rest.get("/v1/items/i1/similar")  # the probe does not implement it: 501
    assert similar.headers["x-ratelimit-limit"] == "2"
    assert rest.get(RECOMMEND).headers["x-ratelimit-limit"] == str(BURST)


# -- request limits -----------------------------------------------------------------------------


def test_an_oversized_body_is_413(secure: SecureEdge) -> None:
    padding = b"x" * (MAX_REQUEST_BODY_BYTES + 1)
    reply = secure.rest(secure.token("ingest:write")).request(
        "POST", "/v1/interactions:batchCreate", raw=b'{"pad": "' + padding + b'"}')
    assert reply.status == 413
    assert reply.body == {"code": 8, "message": "Payload Too Large"}


def test_oversized_headers_are_431(secure: SecureEdge) -> None:
    big = "a" * (MAX_REQUEST_HEADERS_KB * 1024)
    reply = secure.rest(secure.token("recommend:read")).get(RECOMMEND, headers={"x-big": big})
    assert reply.status == 431
    assert reply.body == {"code": 8, "message": "Request Header Fields Too Large"}


# -- TLS, and what the edge does not expose -----------------------------------------------------


def test_the_listener_speaks_tls_only(secure: SecureEdge) -> None:
    conn = http.client.HTTPConnection(HOST, secure.envoy.port, timeout=5)
    try:
        with pytest.raises((ConnectionError, http.client.HTTPException)):
            conn.request("GET", RECOMMEND)
            conn.getresponse()
    finally:
        conn.close()
    # A client that does not trust the local CA refuses Envoy's certificate.
    untrusted = http.client.HTTPSConnection(HOST, secure.envoy.port, timeout=5,
                                            context=ssl.create_default_context())
    try:
        with pytest.raises(ssl.SSLCertVerificationError):
            untrusted.request("GET", RECOMMEND)
    finally:
        untrusted.close()


def test_health_and_reflection_stay_hidden_with_or_without_a_token(secure: SecureEdge) -> None:
    # Over REST the token is checked before the path is known (authentication first).
    assert secure.rest(None).post("/grpc.health.v1.Health/Check").status == 401
    assert secure.rest(secure.token(*SCOPES)).post("/grpc.health.v1.Health/Check").status == 404
    for token in (None, secure.token(*SCOPES)):
        with secure.channel(token) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            assert refused(lambda s=stub: s.Check(health_pb2.HealthCheckRequest(), timeout=5)) \
                == grpc.StatusCode.UNIMPLEMENTED


def _grpcurl(edge: SecureEdge, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VENV_BIN / "grpcurl"), "-cacert", str(edge.pki.ca_cert), "-protoset",
         str(DESCRIPTOR), *args, "-d", '{"userId": "u1"}', edge.envoy.target,
         f"{SERVICE_NAMES['recommender']}/Recommend"],
        capture_output=True, text=True, timeout=30, check=False)


def test_grpcurl_with_the_ca_and_a_token_through_the_tls_listener(secure: SecureEdge) -> None:
    token = secure.token("recommend:read")
    called = _grpcurl(secure, "-H", f"authorization: Bearer {token}")
    assert called.returncode == 0, called.stderr
    assert json.loads(called.stdout)["modelVersion"] == "probe"
    anonymous = _grpcurl(secure)
    assert anonymous.returncode != 0
    assert "Unauthenticated" in anonymous.stderr


def test_the_cli_through_the_edge_with_the_ca_and_a_token(secure: SecureEdge) -> None:
    """What the README shows: RECSYS_CLI_TLS_CA_FILE and RECSYS_CLI_TOKEN, target Envoy."""

    def recsys(token: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "RECSYS_CLI_TLS_CA_FILE": str(secure.pki.ca_cert),
               "RECSYS_CLI_TOKEN": token}
        return subprocess.run(
            [sys.executable, "-m", "services.cli", "recommend", "u1", "--json", "--target",
             secure.envoy.target], capture_output=True, text=True, timeout=60, check=False,
            env=env)

    served = recsys(secure.token("recommend:read"))
    assert served.returncode == 0, served.stderr
    assert json.loads(served.stdout)["modelVersion"] == "probe"
    forbidden = recsys(secure.token("admin"))
    assert forbidden.returncode == 1
    assert "PERMISSION_DENIED: RBAC: access denied" in forbidden.stderr
