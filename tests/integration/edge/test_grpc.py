"""gRPC through Envoy's listener gives the same data as gRPC straight to each service and as
REST; grpcurl works through reflection on each service and through Envoy with the descriptor."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from google.protobuf.message import Message

from recsys.events.v1 import interaction_pb2
from recsys.ingest.v1 import ingest_pb2
from recsys.recommender.v1 import recommender_pb2
from recsys.trainer.v1 import trainer_pb2
from scripts.localstack.components import HOST, VENV_BIN
from services.core.names import SERVICE_NAMES
from services.edge.descriptor import DESCRIPTOR
from tests.support.clients import Stubs
from tests.support.edge import ITEMS, USERS, Edge

pytestmark = pytest.mark.integration

Call = Callable[[Stubs], Callable[..., Message]]


def cases(edge: Edge) -> list[tuple[str, Call, Message]]:
    """(REST path, gRPC method, request) for the same question."""
    rec, trainer = recommender_pb2, trainer_pb2
    return [
        (f"/v1/users/{USERS[3]}/recommendations?k=5&excludeItemIds={ITEMS[0]}",
         lambda s: s.recommender.Recommend,
         rec.RecommendRequest(user_id=USERS[3], k=5, exclude_item_ids=[ITEMS[0]])),
        (f"/v1/items/{ITEMS[4]}/similar?k=4", lambda s: s.recommender.SimilarItems,
         rec.SimilarItemsRequest(item_id=ITEMS[4], k=4)),
        ("/v1/model", lambda s: s.recommender.GetModelInfo, rec.GetModelInfoRequest()),
        (f"/v1/trainingJobs/{edge.job.job_id}", lambda s: s.trainer.GetTrainingJob,
         trainer.GetTrainingJobRequest(job_id=edge.job.job_id)),
        ("/v1/modelVersions?pageSize=1", lambda s: s.trainer.ListModelVersions,
         trainer.ListModelVersionsRequest(page_size=1)),
    ]


def test_same_data_over_rest_grpc_via_envoy_and_direct_grpc(edge: Edge) -> None:
    for path, method, request in cases(edge):
        direct = method(edge.direct)(request, timeout=10)
        assert method(edge.via_envoy)(request, timeout=10) == direct, path
        reply = edge.rest.get(path)
        assert reply.status == 200, reply.body
        # The documented JSON is proto3's canonical mapping with every field printed.
        assert reply.body == json_format.MessageToDict(
            direct, always_print_fields_with_no_presence=True), path


def test_same_error_over_rest_grpc_via_envoy_and_direct_grpc(edge: Edge) -> None:
    request = recommender_pb2.RecommendRequest(user_id=USERS[0], k=101)
    errors = []
    for stubs in (edge.direct, edge.via_envoy):
        with pytest.raises(grpc.RpcError) as raised:
            stubs.recommender.Recommend(request, timeout=10)
        errors.append((raised.value.code(), raised.value.details()))
    assert errors[0] == errors[1]
    reply = edge.rest.get(f"/v1/users/{USERS[0]}/recommendations?k=101")
    assert (reply.status, reply.body["code"], reply.body["message"]) == (
        400, grpc.StatusCode.INVALID_ARGUMENT.value[0], errors[0][1])


def test_client_streaming_passes_through_envoy(edge: Edge) -> None:
    """StreamInteractions is gRPC only; Envoy streams it to ingest unbuffered."""

    def event(n: int, user: str = "stream-user") -> interaction_pb2.Interaction:
        e = interaction_pb2.Interaction(user_id=user, item_id=f"stream-item-{n}",
                                        type=interaction_pb2.INTERACTION_TYPE_VIEW)
        e.occurred_at.FromJsonString("2024-05-01T12:00:00Z")
        return e

    chunks = [ingest_pb2.StreamInteractionsRequest(interactions=[event(0), event(1)]),
              ingest_pb2.StreamInteractionsRequest(interactions=[event(2, user="")])]
    reply = edge.via_envoy.ingest.StreamInteractions(iter(chunks), timeout=30)
    assert (reply.accepted_count, reply.rejected_count) == (2, 1)
    assert [(r.index, r.field) for r in reply.rejections] == [(2, "user_id")]


def grpcurl(*args: str, plaintext: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(VENV_BIN / "grpcurl"), *(["-plaintext"] if plaintext else []),
                           *args], capture_output=True, text=True, timeout=30, check=False)


@pytest.mark.parametrize("name", list(SERVICE_NAMES))
def test_grpcurl_lists_and_describes_each_service_by_reflection(edge: Edge, name: str) -> None:
    address = f"{HOST}:{edge.ports[name]}"
    listed = grpcurl(address, "list")
    assert listed.returncode == 0, listed.stderr
    assert {SERVICE_NAMES[name], "grpc.health.v1.Health"} <= set(listed.stdout.split())
    described = grpcurl(address, "describe", SERVICE_NAMES[name])
    assert described.returncode == 0, described.stderr
    assert f"service {SERVICE_NAMES[name].rpartition('.')[2]} {{" in described.stdout


def test_grpcurl_calls_recommend_directly_and_through_envoy(edge: Edge) -> None:
    method = f"{SERVICE_NAMES['recommender']}/Recommend"
    data = json.dumps({"userId": USERS[5], "k": 3})
    rest: dict[str, Any] = edge.rest.get(f"/v1/users/{USERS[5]}/recommendations?k=3").body
    direct = grpcurl("-d", data, f"{HOST}:{edge.ports['recommender']}", method)
    assert direct.returncode == 0, direct.stderr
    # Reflection is not exposed at the edge: through Envoy, grpcurl reads the descriptor set,
    # trusts the edge's CA and sends a token.
    tls = ["-cacert", str(edge.pki.ca_cert), "-H", f"authorization: Bearer {edge.token}"]
    via_envoy = grpcurl(*tls, "-protoset", str(DESCRIPTOR), "-d", data, edge.envoy.target,
                        method, plaintext=False)
    assert via_envoy.returncode == 0, via_envoy.stderr
    # grpcurl names fields as its descriptor does: reflection's (from the Python stubs, no
    # json_name) gives item_id, the descriptor set's gives itemId.
    expected = [(item["itemId"], item["score"]) for item in rest["items"]]
    assert [(i["item_id"], i["score"]) for i in json.loads(direct.stdout)["items"]] == expected
    assert [(i["itemId"], i["score"]) for i in json.loads(via_envoy.stdout)["items"]] == expected
    listed = grpcurl(*tls, edge.envoy.target, "list", plaintext=False)
    assert listed.returncode != 0
    assert "does not support the reflection API" in listed.stderr
