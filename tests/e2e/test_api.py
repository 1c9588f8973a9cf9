"""Every REST route of docs/rest-api.md against the running local stack, after the main job:
the documented JSON for good input, the documented HTTP status and JSON error for bad input,
and the same request over gRPC (directly and through Envoy) giving the same data."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, NamedTuple

import grpc
import pytest
from google.protobuf import json_format
from google.protobuf.message import Message

from recsys.events.v1 import interaction_pb2
from recsys.ingest.v1 import ingest_pb2
from recsys.recommender.v1 import recommender_pb2
from recsys.trainer.v1 import trainer_pb2
from services.cli.token import mint_token
from tests.support.clients import Reply, Rest, Stubs
from tests.support.local_stack import Stack
from tests.support.polling import eventually

pytestmark = pytest.mark.e2e

USER = "u5"  # a synthetic user of the main job; no test writes events for it
ITEM = "i1"
Call = Callable[[Stubs], Any]


def from_rest(reply: Reply, grpc_reply: Message) -> Message:
    """The REST body read as the RPC's response type (fails on any unknown or mistyped key)."""
    return json_format.Parse(json.dumps(reply.body), type(grpc_reply)())


def main_job(direct: Stubs) -> trainer_pb2.TrainingJob:
    jobs = direct.trainer.ListTrainingJobs(trainer_pb2.ListTrainingJobsRequest(), timeout=5).jobs
    return next(j for j in jobs if j.state == trainer_pb2.JOB_STATE_SUCCEEDED)


def event(user: str, item: str, **fields: Any) -> interaction_pb2.Interaction:
    message = interaction_pb2.Interaction(
        user_id=user, item_id=item, type=interaction_pb2.INTERACTION_TYPE_PURCHASE, **fields)
    message.occurred_at.FromJsonString("2024-05-01T12:00:00Z")
    return message


def as_json(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message)


# -- good input: REST and gRPC give the same data ----------------------------------------------

READS: list[tuple[str, Call]] = [
    (f"/v1/users/{USER}/recommendations?k=5",
     lambda s: s.recommender.Recommend(recommender_pb2.RecommendRequest(user_id=USER, k=5))),
    (f"/v1/users/{USER}/recommendations?k=3&excludeSeen=false&excludeItemIds={ITEM}",
     lambda s: s.recommender.Recommend(recommender_pb2.RecommendRequest(
         user_id=USER, k=3, exclude_seen=False, exclude_item_ids=[ITEM]))),
    ("/v1/users/nobody-knows-me/recommendations?k=4",
     lambda s: s.recommender.Recommend(recommender_pb2.RecommendRequest(
         user_id="nobody-knows-me", k=4))),
    (f"/v1/items/{ITEM}/similar?k=5",
     lambda s: s.recommender.SimilarItems(recommender_pb2.SimilarItemsRequest(item_id=ITEM, k=5))),
    ("/v1/model", lambda s: s.recommender.GetModelInfo(recommender_pb2.GetModelInfoRequest())),
    ("/v1/modelVersions?pageSize=5",
     lambda s: s.trainer.ListModelVersions(trainer_pb2.ListModelVersionsRequest(page_size=5))),
]


@pytest.mark.parametrize(("path", "call"), READS, ids=[path for path, _ in READS])
def test_reads_give_the_same_data_over_rest_and_grpc(
        rest: Rest, direct: Stubs, edge: Stubs, path: str, call: Call) -> None:
    reply = rest.get(path)
    assert reply.status == 200, reply.body
    over_grpc = call(direct)
    assert from_rest(reply, over_grpc) == over_grpc
    assert call(edge) == over_grpc


def test_recommendations_are_the_documented_json(rest: Rest, direct: Stubs) -> None:
    body = rest.get(f"/v1/users/{USER}/recommendations?k=5").body
    assert set(body) == {"items", "modelVersion", "strategy"}
    assert body["strategy"] == "STRATEGY_PERSONALIZED"
    assert body["modelVersion"] == main_job(direct).model_version
    assert [set(item) for item in body["items"]] == [{"itemId", "score", "coldStart"}] * 5
    scores = [item["score"] for item in body["items"]]
    assert scores == sorted(scores, reverse=True)
    unknown = rest.get("/v1/users/nobody-knows-me/recommendations?k=4").body
    assert unknown["strategy"] == "STRATEGY_POPULARITY" and len(unknown["items"]) == 4


def test_a_finished_job_reads_the_same_over_rest_and_grpc(rest: Rest, direct: Stubs) -> None:
    job = main_job(direct)
    reply = rest.get(f"/v1/trainingJobs/{job.job_id}")
    assert reply.status == 200
    assert reply.body["job"]["state"] == "JOB_STATE_SUCCEEDED"
    assert reply.body["job"]["promoted"] is True
    got = direct.trainer.GetTrainingJob(trainer_pb2.GetTrainingJobRequest(job_id=job.job_id))
    assert from_rest(reply, got) == got
    listed = rest.get("/v1/trainingJobs?pageSize=100")
    assert job.job_id in {j["jobId"] for j in listed.body["jobs"]}


def test_ingest_gives_the_same_event_ids_over_rest_and_grpc(rest: Rest, direct: Stubs) -> None:
    one = event("e2e-writer", "i2", value=2)
    reply = rest.post("/v1/interactions", as_json(one))
    assert reply.status == 200 and set(reply.body) == {"eventId"}
    over_grpc = direct.ingest.CreateInteraction(ingest_pb2.CreateInteractionRequest(
        interaction=one))
    assert reply.body["eventId"] == over_grpc.event_id != ""

    batch = [event("e2e-writer", "i3"), event("", "i4")]
    reply = rest.post("/v1/interactions:batchCreate",
                      {"interactions": [as_json(e) for e in batch]})
    assert reply.status == 200
    over_grpc = direct.ingest.BatchCreateInteractions(
        ingest_pb2.BatchCreateInteractionsRequest(interactions=batch))
    assert from_rest(reply, over_grpc) == over_grpc
    assert reply.body["acceptedCount"] == 1
    assert reply.body["rejections"] == [
        {"index": "1", "field": "user_id", "reason": "must be 1 to 128 printable characters"}]


def test_an_ingested_purchase_leaves_the_users_recommendations(rest: Rest) -> None:
    user = "u7"
    first = rest.get(f"/v1/users/{user}/recommendations?k=3").body["items"][0]["itemId"]
    assert rest.post("/v1/interactions", as_json(event(user, first))).status == 200
    eventually(lambda: first not in {i["itemId"] for i in rest.get(
        f"/v1/users/{user}/recommendations?k=3").body["items"]},
               timeout=30, what=f"{first} leaving {user}'s recommendations")


def test_training_jobs_start_conflict_and_cancel(rest: Rest, direct: Stubs) -> None:
    before = direct.recommender.GetModelInfo(recommender_pb2.GetModelInfoRequest()).model_version
    started = rest.post("/v1/trainingJobs", {"hyperparameters": {"epochs": 200}})
    assert started.status == 200, started.body
    job_id = started.body["job"]["jobId"]
    assert started.body["job"]["hyperparameters"]["epochs"] == 200

    with pytest.raises(grpc.RpcError) as conflict:
        direct.trainer.StartTrainingJob(trainer_pb2.StartTrainingJobRequest())
    assert conflict.value.code() == grpc.StatusCode.ALREADY_EXISTS
    again = rest.post("/v1/trainingJobs", {})
    assert (again.status, again.body["code"]) == (409, 6)
    assert again.body["message"] == conflict.value.details()
    assert job_id in again.body["message"]

    cancelled = rest.post(f"/v1/trainingJobs/{job_id}:cancel")
    assert cancelled.status == 200 and cancelled.body["job"]["jobId"] == job_id
    watch = direct.trainer.WatchTrainingJob(
        trainer_pb2.WatchTrainingJobRequest(job_id=job_id), timeout=120)
    last = [update.job for update in watch][-1]
    assert last.state == trainer_pb2.JOB_STATE_CANCELLED
    twice = rest.post(f"/v1/trainingJobs/{job_id}:cancel")
    assert (twice.status, twice.body["code"]) == (400, 9)
    assert direct.recommender.GetModelInfo(
        recommender_pb2.GetModelInfoRequest()).model_version == before


def test_promoting_the_champion_again_is_a_no_op_over_both(rest: Rest, direct: Stubs) -> None:
    version = main_job(direct).model_version
    reply = rest.post(f"/v1/modelVersions/{version}:promote")
    assert reply.status == 200
    assert reply.body["modelVersion"]["version"] == version
    assert reply.body["previousVersion"] == version
    assert "champion" in reply.body["modelVersion"]["aliases"]
    over_grpc = direct.trainer.PromoteModelVersion(
        trainer_pb2.PromoteModelVersionRequest(version=version))
    assert from_rest(reply, over_grpc) == over_grpc


# -- bad input: the documented HTTP status and JSON error, and the same status over gRPC --------

LONG = "x" * 129


class Bad(NamedTuple):
    method: str
    path: str
    body: Any
    status: int  # HTTP
    code: int  # google.rpc.Code, in the JSON body and over gRPC
    message: str  # how the message starts
    call: Call | None  # the same request over gRPC; None for JSON and routing errors


BAD = [
    Bad("GET", f"/v1/users/{USER}/recommendations?k=101", None, 400, 3, "k: must be 1 to 100",
     lambda s: s.recommender.Recommend(recommender_pb2.RecommendRequest(user_id=USER, k=101))),
    Bad("GET", f"/v1/users/{USER}/recommendations?k=abc", None, 400, 3, "k: invalid value", None),
    Bad("GET", f"/v1/users/{USER}/recommendations?unknown=1", None, 400, 3,
     'Could not find field "unknown"', None),
    Bad("GET", f"/v1/users/{LONG}/recommendations", None, 400, 3, "user_id: at most 128",
     lambda s: s.recommender.Recommend(recommender_pb2.RecommendRequest(user_id=LONG))),
    Bad("GET", "/v1/items/no-such-item/similar", None, 404, 5, "item 'no-such-item' is not",
     lambda s: s.recommender.SimilarItems(recommender_pb2.SimilarItemsRequest(
         item_id="no-such-item"))),
    Bad("GET", f"/v1/items/{ITEM}/similar?k=101", None, 400, 3, "k: must be",
     lambda s: s.recommender.SimilarItems(recommender_pb2.SimilarItemsRequest(item_id=ITEM,
                                                                              k=101))),
    Bad("POST", "/v1/interactions", {"itemId": "i1", "type": "INTERACTION_TYPE_CLICK",
                                  "occurredAt": "2024-05-01T12:00:00Z"},
     400, 3, "interaction.user_id: must be 1 to 128",
     lambda s: s.ingest.CreateInteraction(ingest_pb2.CreateInteractionRequest(
         interaction=event("", "i1")))),
    Bad("POST", "/v1/interactions", {"userId": 5, "itemId": "i1"}, 400, 3, "", None),
    Bad("POST", "/v1/interactions", {"userId": "u1", "itemId": "i1", "type": "NOPE"},
     400, 3, "", None),
    Bad("POST", "/v1/interactions:batchCreate", {"interactions": []}, 400, 3,
     "interactions: must hold 1 to 1000 events, got 0",
     lambda s: s.ingest.BatchCreateInteractions(ingest_pb2.BatchCreateInteractionsRequest())),
    Bad("POST", "/v1/trainingJobs", {"hyperparameters": {"factors": 2000}}, 400, 3,
     "hyperparameters.factors: must be 1 to 1024",
     lambda s: s.trainer.StartTrainingJob(trainer_pb2.StartTrainingJobRequest(
         hyperparameters=trainer_pb2.Hyperparameters(factors=2000)))),
    Bad("GET", "/v1/trainingJobs/no-such-job", None, 404, 5, "training job no-such-job not found",
     lambda s: s.trainer.GetTrainingJob(trainer_pb2.GetTrainingJobRequest(job_id="no-such-job"))),
    Bad("GET", "/v1/trainingJobs?pageSize=101", None, 400, 3, "page_size: must be 0 to 100",
     lambda s: s.trainer.ListTrainingJobs(trainer_pb2.ListTrainingJobsRequest(page_size=101))),
    Bad("POST", "/v1/modelVersions/999:promote", None, 404, 5, "model recsys-mf has no version 999",
     lambda s: s.trainer.PromoteModelVersion(
         trainer_pb2.PromoteModelVersionRequest(version="999"))),
    Bad("POST", "/v1/modelVersions/abc:promote", None, 400, 3, "version: must be a version number",
     lambda s: s.trainer.PromoteModelVersion(
         trainer_pb2.PromoteModelVersionRequest(version="abc"))),
    Bad("GET", "/v1/nope", None, 404, 5, "Could not resolve /v1/nope to a method", None),
    Bad("DELETE", "/v1/model", None, 404, 5, "", None),
]


@pytest.mark.parametrize("bad", BAD, ids=[f"{b.method} {b.path[:60]} {json.dumps(b.body)[:40]}"
                                           for b in BAD])
def test_bad_input_gets_the_documented_error(rest: Rest, direct: Stubs, bad: Bad) -> None:
    reply = rest.request(bad.method, bad.path, bad.body)
    assert (reply.status, reply.body["code"]) == (bad.status, bad.code), reply.body
    assert reply.body["message"].startswith(bad.message), reply.body
    if bad.call is None:
        return
    with pytest.raises(grpc.RpcError) as caught:
        bad.call(direct)
    assert caught.value.code().value[0] == bad.code
    assert caught.value.details().startswith(bad.message)


def test_the_edge_wants_a_token_with_the_right_scope(rest: Rest, stack: Stack) -> None:
    anonymous = rest.with_token(None).get(f"/v1/users/{USER}/recommendations")
    assert (anonymous.status, anonymous.body["code"]) == (401, 16)
    reader = rest.with_token(mint_token(["recommend:read"], subject="e2e-reader",
                                        key_file=stack.security["token_signing_key"]))
    assert reader.get(f"/v1/users/{USER}/recommendations").status == 200
    denied = reader.post("/v1/trainingJobs", {})
    assert (denied.status, denied.body["code"]) == (403, 7)
