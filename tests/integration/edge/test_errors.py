"""How failures look at the edge: each gRPC status as HTTP, rich details, Envoy's own errors.

The recommender upstream here is the runtime's probe service, which fails on demand; ingest is
the real service with its broker down; nothing listens at the trainer's address.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status
from prometheus_client import CollectorRegistry

from recsys.events.v1 import interaction_pb2
from recsys.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from recsys.recommender.v1 import recommender_pb2, recommender_pb2_grpc
from recsys.trainer.v1 import trainer_pb2, trainer_pb2_grpc
from scripts.localstack.components import HOST, free_port
from scripts.localstack.envoy import Envoy
from scripts.localstack.pki import Pki
from services.core.config import ServerSettings
from services.edge.listeners import MAX_REQUEST_BODY_BYTES
from services.edge.profiles import pki_security
from services.edge.render import ADMIN_PATHS
from services.edge.tokens import SCOPES
from services.ingest.app import IngestApp
from services.ingest.settings import IngestSettings
from tests.support.clients import Rest, envoy_channel
from tests.support.errors import example, recsys_errors
from tests.support.loop_thread import LoopThread
from tests.support.polling import eventually
from tests.support.probe_app import ProbeApp

pytestmark = pytest.mark.integration

EVENT = {"userId": "u1", "itemId": "i1", "type": "INTERACTION_TYPE_CLICK",
         "occurredAt": "2024-05-01T12:00:00Z"}


@dataclass(frozen=True)
class FailingEdge:
    envoy: Envoy
    rest: Rest
    channel: grpc.Channel


@pytest.fixture(scope="module")
def failing(edge_pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FailingEdge]:
    loop = LoopThread()
    probe = loop.serve(ProbeApp(), ServerSettings())
    ingest = loop.serve(IngestApp(settings := IngestSettings(
        kafka_bootstrap=f"{HOST}:{free_port()}", kafka_topic="edge-errors"),
        CollectorRegistry()), settings)
    try:
        with (
            Envoy(tmp_path_factory.mktemp("envoy"), ingest=f"{HOST}:{ingest.port}",
                  trainer=f"{HOST}:{free_port()}", recommender=f"{HOST}:{probe.port}",
                  security=pki_security(edge_pki.directory),
                  admin_paths=(*ADMIN_PATHS, "/clusters")) as envoy,
            envoy_channel(envoy, edge_pki, token := edge_pki.mint_token(
                SCOPES, subject="edge-errors")) as channel,
        ):
            yield FailingEdge(envoy, Rest(envoy.port, ca=edge_pki.ca_cert, token=token),
                              channel)
    finally:
        for running in (probe, ingest):
            loop.run(running.stop(1.0))
        loop.close()


# The HTTP status Envoy's transcoder gives each gRPC status the services use (a status added
# to the error hierarchy fails the tests below until it is added here).
HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.INTERNAL: 500,
}

# The probe's user_id → the status it fails with and the message: each RecsysError subclass
# (found, not listed), and an unexpected exception.
MAPPING = [pytest.param(f"raise-{error.__name__}", error.code, example(error).message,
                        id=error.__name__) for error in recsys_errors()]
MAPPING.append(pytest.param("bug", grpc.StatusCode.INTERNAL, "internal error", id="bug"))


@pytest.mark.parametrize(("user", "code", "message"), MAPPING)
def test_grpc_status_becomes_http_status_and_json(
    failing: FailingEdge, user: str, code: grpc.StatusCode, message: str
) -> None:
    reply = failing.rest.get(f"/v1/users/{user}/recommendations")
    assert reply.status == HTTP_STATUS[code]
    assert reply.body == {"code": code.value[0], "message": message, "details": []}


@pytest.mark.parametrize(("user", "code", "message"), MAPPING)
def test_grpc_clients_through_envoy_get_the_status_unchanged(
    failing: FailingEdge, user: str, code: grpc.StatusCode, message: str
) -> None:
    stub = recommender_pb2_grpc.RecommenderServiceStub(failing.channel)
    with pytest.raises(grpc.RpcError) as raised:
        stub.Recommend(recommender_pb2.RecommendRequest(user_id=user), timeout=10)
    assert (raised.value.code(), raised.value.details()) == (code, message)


def test_rich_status_details_reach_rest_clients_as_json(failing: FailingEdge) -> None:
    """Ingest with its broker down: UNAVAILABLE carrying an IngestFailure detail."""
    reply = failing.rest.post("/v1/interactions", EVENT)
    assert reply.status == 503
    assert reply.body["code"] == grpc.StatusCode.UNAVAILABLE.value[0]
    assert "events were not published" in reply.body["message"]
    assert reply.body["details"] == [{
        "@type": "type.googleapis.com/recsys.ingest.v1.IngestFailure",
        "acceptedCount": "0",
        "notAcceptedIndexes": ["0"],
    }]


def test_rich_status_details_reach_grpc_clients_through_envoy(failing: FailingEdge) -> None:
    stub = ingest_pb2_grpc.IngestServiceStub(failing.channel)
    event = interaction_pb2.Interaction(user_id="u1", item_id="i1",
                                        type=interaction_pb2.INTERACTION_TYPE_CLICK)
    event.occurred_at.FromJsonString(EVENT["occurredAt"])
    with pytest.raises(grpc.RpcError) as raised:
        stub.CreateInteraction(ingest_pb2.CreateInteractionRequest(interaction=event),
                               timeout=10)
    status = rpc_status.from_call(raised.value)
    assert status is not None and status.code == grpc.StatusCode.UNAVAILABLE.value[0]
    failure = ingest_pb2.IngestFailure()
    assert status.details[0].Unpack(failure)
    assert list(failure.not_accepted_indexes) == [0]


def test_unreachable_upstream_is_503_for_rest_and_unavailable_for_grpc(
    failing: FailingEdge,
) -> None:
    reply = failing.rest.get("/v1/trainingJobs")
    assert reply.status == 503
    assert reply.body["code"] == grpc.StatusCode.UNAVAILABLE.value[0]
    assert reply.body["message"]
    stub = trainer_pb2_grpc.TrainerServiceStub(failing.channel)
    with pytest.raises(grpc.RpcError) as raised:
        stub.ListTrainingJobs(trainer_pb2.ListTrainingJobsRequest(), timeout=10)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE


def test_deadline_from_grpc_timeout_header_is_504(failing: FailingEdge) -> None:
    reply = failing.rest.get("/v1/users/sleep-3/recommendations",
                             headers={"grpc-timeout": "300m"})
    assert reply.status == 504
    assert reply.body["code"] == grpc.StatusCode.DEADLINE_EXCEEDED.value[0]


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/v1/nope"),
    ("GET", "/"),
    ("DELETE", "/v1/model"),  # a known path with the wrong method
    ("POST", "/v1/users/u1/recommendations"),
    ("POST", "/grpc.health.v1.Health/Check"),
    ("GET", "/stats/prometheus"),
])
def test_unknown_routes_are_404_with_json(failing: FailingEdge, method: str, path: str) -> None:
    reply = failing.rest.request(method, path)
    assert reply.status == 404
    assert reply.body["code"] == grpc.StatusCode.NOT_FOUND.value[0]
    assert reply.body["message"]


def test_health_and_reflection_are_not_exposed_to_grpc_clients(failing: FailingEdge) -> None:
    health = health_pb2_grpc.HealthStub(failing.channel)
    with pytest.raises(grpc.RpcError) as raised:
        health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED
    reflection = reflection_pb2_grpc.ServerReflectionStub(failing.channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    with pytest.raises(grpc.RpcError) as raised:
        list(reflection.ServerReflectionInfo(iter([request]), timeout=5))
    assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED


@pytest.mark.parametrize(("raw", "fragment"), [
    (b'{"userId": "u1"', "Unexpected end of string"),
    (b"[1]", "not repeating"),
    (b'{"userId": 5}', "user_id"),
    (b'{"type": "INTERACTION_TYPE_NOPE"}', "type"),
    (b'{"occurredAt": "yesterday"}', "occurred_at"),
])
def test_malformed_json_is_400(failing: FailingEdge, raw: bytes, fragment: str) -> None:
    reply = failing.rest.request("POST", "/v1/interactions", raw=raw,
                                 headers={"content-type": "application/json"})
    assert reply.status == 400
    assert reply.body["code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert fragment in reply.body["message"]


def test_oversized_body_is_413(failing: FailingEdge) -> None:
    padding = "x" * (MAX_REQUEST_BODY_BYTES + 1)
    raw = b'{"interactions": [], "pad": "' + padding.encode() + b'"}'
    reply = failing.rest.request("POST", "/v1/interactions:batchCreate", raw=raw,
                                 headers={"content-type": "application/json"})
    assert reply.status == 413
    assert reply.body == {"code": 8, "message": "Payload Too Large"}


def test_health_checks_probe_each_service_by_name(failing: FailingEdge) -> None:
    """The probe recommender is SERVING; ingest, with its broker down, is NOT_SERVING; the
    trainer does not answer: Envoy sees each, and still routes (panic mode) to report it."""

    def healthy() -> dict[str, bool]:
        clusters = Rest(failing.envoy.admin_port).get("/clusters?format=json").body
        return {c["name"]: not c["host_statuses"][0]["health_status"].get(
                    "failed_active_health_check", False)
                for c in clusters["cluster_statuses"]}

    expected = {"ingest": False, "trainer": False, "recommender": True}
    eventually(lambda: healthy() == expected, timeout=30, what="Envoy's health checks")
