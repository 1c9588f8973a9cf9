"""Every REST route through Envoy: the documented JSON for good input, the documented HTTP
status and JSON error for bad input (docs/rest-api.md)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from recsys.trainer.v1 import trainer_pb2
from tests.support.clients import Rest
from tests.support.edge import ITEMS, USERS, Edge, taste_group_clicks

pytestmark = pytest.mark.integration

RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
EVENT = {"userId": "rest-user", "itemId": "rest-item", "type": "INTERACTION_TYPE_PURCHASE",
         "value": 2, "occurredAt": "2024-05-01T12:00:00Z", "context": {"device": "web"}}


def assert_error(reply: Any, status: int, code: int, *fragments: str) -> None:
    """The documented error shape: HTTP status, google.rpc code, a message naming the field."""
    assert reply.status == status, reply.body
    assert reply.body["code"] == code
    for fragment in fragments:
        assert fragment in reply.body["message"]


def nanoseconds(rfc3339: str) -> int:
    stamp = Timestamp()
    stamp.FromJsonString(rfc3339)
    return stamp.ToNanoseconds()


def seen_by(user: str) -> set[str]:
    return {e["itemId"] for e in taste_group_clicks() if e["userId"] == user}


# -- RecommenderService ------------------------------------------------------------------------


def test_recommend(edge: Edge) -> None:
    reply = edge.rest.get(f"/v1/users/{USERS[1]}/recommendations")
    assert reply.status == 200
    assert set(reply.body) == {"items", "modelVersion", "strategy"}
    assert reply.body["modelVersion"] == edge.job.model_version
    assert reply.body["strategy"] == "STRATEGY_PERSONALIZED"
    items = reply.body["items"]
    assert len(items) == 10  # k defaults to 10
    assert all(set(item) == {"itemId", "score"} for item in items)
    scores = [item["score"] for item in items]
    assert scores == sorted(scores, reverse=True)
    assert not {item["itemId"] for item in items} & seen_by(USERS[1])  # excludeSeen defaults on


@pytest.mark.parametrize("query", ["excludeSeen=false", "exclude_seen=false"])
def test_recommend_can_include_seen_items(rest: Rest, query: str) -> None:
    reply = rest.get(f"/v1/users/{USERS[1]}/recommendations?{query}")
    assert reply.status == 200
    assert {item["itemId"] for item in reply.body["items"]} & seen_by(USERS[1])


@pytest.mark.parametrize("name", ["excludeItemIds", "exclude_item_ids"])
def test_recommend_with_k_and_excluded_items(rest: Rest, name: str) -> None:
    first = rest.get(f"/v1/users/{USERS[2]}/recommendations?k=3").body["items"]
    assert len(first) == 3
    skip = [first[0]["itemId"], first[1]["itemId"]]
    reply = rest.get(f"/v1/users/{USERS[2]}/recommendations?k=3"
                     f"&{name}={skip[0]}&{name}={skip[1]}")
    assert reply.status == 200
    items = [item["itemId"] for item in reply.body["items"]]
    assert len(items) == 3
    assert items[0] == first[2]["itemId"]
    assert not set(items) & set(skip)


def test_recommend_for_an_unknown_user_falls_back_to_popularity(rest: Rest) -> None:
    reply = rest.get("/v1/users/never-seen/recommendations?k=5")
    assert reply.status == 200
    assert reply.body["strategy"] == "STRATEGY_POPULARITY"
    assert len(reply.body["items"]) == 5


def test_path_parameters_are_percent_decoded(rest: Rest) -> None:
    encoded = "".join(f"%{ord(c):02X}" for c in USERS[1])
    plain = rest.get(f"/v1/users/{USERS[1]}/recommendations").body
    assert rest.get(f"/v1/users/{encoded}/recommendations").body == plain
    # 128 characters once decoded (valid), 384 if it were not. (An escaped "/" is refused
    # before routing: tests/integration/security/test_paths.py.)
    assert rest.get(f"/v1/users/{'%3A' * 128}/recommendations").status == 200
    assert_error(rest.get(f"/v1/users/{'%3A' * 129}/recommendations"), 400, 3,
                 "user_id: at most 128 characters, got 129")


@pytest.mark.parametrize("user", ["u%0A1", "u%C2%A01"])  # a line break, a no-break space
def test_an_id_that_is_not_printable_is_refused(rest: Rest, user: str) -> None:
    assert_error(rest.get(f"/v1/users/{user}/recommendations"), 400, 3,
                 "user_id: must be 1 to 128 printable characters")
    assert_error(rest.get(f"/v1/items/{user}/similar"), 400, 3,
                 "item_id: must be 1 to 128 printable characters")


@pytest.mark.parametrize(("query", "fragment"), [
    ("k=101", "k: must be 1 to 100"),
    ("k=-1", "k: must be 1 to 100"),
    ("k=abc", 'k: invalid value "abc"'),
    ("k=1.5", "k: invalid value"),
    ("excludeSeen=maybe", "exclude_seen: invalid value"),
    ("unknown=1", 'Could not find field "unknown"'),
])
def test_recommend_bad_query(rest: Rest, query: str, fragment: str) -> None:
    assert_error(rest.get(f"/v1/users/{USERS[0]}/recommendations?{query}"), 400, 3, fragment)


def test_similar_items(edge: Edge) -> None:
    reply = edge.rest.get(f"/v1/items/{ITEMS[0]}/similar?k=5")
    assert reply.status == 200
    assert set(reply.body) == {"items", "modelVersion"}
    assert reply.body["modelVersion"] == edge.job.model_version
    items = reply.body["items"]
    assert len(items) == 5
    assert ITEMS[0] not in {item["itemId"] for item in items}
    assert all(-1 <= item["score"] <= 1 for item in items)


def test_similar_items_errors(rest: Rest) -> None:
    assert_error(rest.get("/v1/items/no-such-item/similar"), 404, 5, "no-such-item")
    assert_error(rest.get(f"/v1/items/{ITEMS[0]}/similar?k=101"), 400, 3, "k")


def test_model_info(edge: Edge) -> None:
    reply = edge.rest.get("/v1/model")
    assert reply.status == 200
    body = reply.body
    assert body["modelVersion"] == edge.job.model_version
    assert body["modelName"] == "edge-mf"
    assert body["alias"] == "champion"
    assert RFC3339.match(body["loadedAt"])
    # int64 fields are JSON strings, int32 fields numbers (proto3 JSON).
    assert (body["userCount"], body["itemCount"], body["factors"]) == (
        str(len(USERS)), str(len(ITEMS)), 8)
    assert set(body["metrics"]) == {"precisionAt10", "recallAt10", "ndcgAt10", "mapAt10",
                                    "usersEvaluated", "popularityNdcgAt10"}
    assert body["lineage"]["rowCount"] == str(len(taste_group_clicks()))
    assert body["lineage"]["topic"] == "edge-interactions"


# -- IngestService -----------------------------------------------------------------------------


def test_create_interaction_is_idempotent_by_content(rest: Rest) -> None:
    reply = rest.post("/v1/interactions", EVENT)
    assert reply.status == 200
    assert set(reply.body) == {"eventId"}
    assert reply.body["eventId"]
    assert rest.post("/v1/interactions", EVENT).body == reply.body


def test_create_interaction_accepts_proto_names_and_enum_numbers(rest: Rest) -> None:
    """lowerCamelCase or proto field names, enum names or numbers: the same event."""
    camel = rest.post("/v1/interactions", EVENT).body["eventId"]
    snake = {"user_id": "rest-user", "item_id": "rest-item", "type": 4, "value": 2,
             "occurred_at": "2024-05-01T12:00:00Z", "context": {"device": "web"}}
    assert rest.post("/v1/interactions", snake).body == {"eventId": camel}


def test_unknown_body_fields_are_ignored(rest: Rest) -> None:
    """As documented: the transcoder parses bodies leniently (unlike query parameters)."""
    expected = rest.post("/v1/interactions", EVENT).body
    assert rest.post("/v1/interactions", {**EVENT, "unknownField": 1}).body == expected


@pytest.mark.parametrize(("change", "field"), [
    ({"userId": None}, "interaction.user_id"),
    ({"itemId": ""}, "interaction.item_id"),
    ({"type": None}, "interaction.type"),
    ({"occurredAt": None}, "interaction.occurred_at"),
    ({"occurredAt": "2999-01-01T00:00:00Z"}, "interaction.occurred_at"),
    ({"type": "INTERACTION_TYPE_RATING", "value": 7}, "interaction.value"),
    ({"value": -1}, "interaction.value"),
])
def test_create_interaction_invalid_event(rest: Rest, change: dict[str, Any], field: str) -> None:
    event = {k: v for k, v in {**EVENT, **change}.items() if v is not None}
    assert_error(rest.post("/v1/interactions", event), 400, 3, f"{field}:")


def test_create_interaction_wrong_types(rest: Rest) -> None:
    assert_error(rest.post("/v1/interactions", {**EVENT, "userId": 5}), 400, 3, "user_id")
    assert_error(rest.post("/v1/interactions", {**EVENT, "value": "two"}), 400, 3, "value")
    assert_error(rest.post("/v1/interactions", {**EVENT, "context": ["web"]}), 400, 3)


def test_batch_create_reports_each_rejection(rest: Rest) -> None:
    good = {**EVENT, "itemId": "batch-item"}
    bad = {**EVENT, "userId": ""}
    reply = rest.post("/v1/interactions:batchCreate", {"interactions": [good, bad]})
    assert reply.status == 200
    body = reply.body
    assert body["acceptedCount"] == 1
    assert body["eventIds"][0] and body["eventIds"][1] == ""
    assert body["rejections"] == [{"index": "1", "field": "user_id",
                                   "reason": body["rejections"][0]["reason"]}]


def test_batch_create_all_or_nothing(rest: Rest) -> None:
    """One invalid event fails the batch; a google.rpc.BadRequest detail lists every one."""
    bad = {**EVENT, "userId": ""}
    reply = rest.post("/v1/interactions:batchCreate",
                      {"interactions": [EVENT, bad, bad], "allOrNothing": True})
    assert_error(reply, 400, 3, "interactions[1].user_id", "and 1 more")
    [detail] = reply.body["details"]
    assert detail["@type"] == "type.googleapis.com/google.rpc.BadRequest"
    assert [v["field"] for v in detail["fieldViolations"]] == [
        "interactions[1].user_id", "interactions[2].user_id"]


@pytest.mark.parametrize("count", [0, 1001])
def test_batch_create_size_limits(rest: Rest, count: int) -> None:
    reply = rest.post("/v1/interactions:batchCreate", {"interactions": [EVENT] * count})
    assert_error(reply, 400, 3, "interactions", "1 to 1000")


# -- TrainerService ----------------------------------------------------------------------------


def test_get_training_job(edge: Edge) -> None:
    reply = edge.rest.get(f"/v1/trainingJobs/{edge.job.job_id}")
    assert reply.status == 200
    job = reply.body["job"]
    assert job["jobId"] == edge.job.job_id
    assert (job["state"], job["phase"], job["trigger"]) == (
        "JOB_STATE_SUCCEEDED", "JOB_PHASE_DONE", "JOB_TRIGGER_REQUEST")
    assert job["hyperparameters"]["factors"] == 8
    assert (job["epoch"], job["epochs"]) == (8, 8)
    assert job["modelVersion"] == edge.job.model_version
    assert job["promoted"] is True
    assert job["error"] == ""  # every field is present, defaults included
    assert all(RFC3339.match(job[k]) for k in ("createdAt", "startedAt", "finishedAt"))


def test_get_training_job_unknown(rest: Rest) -> None:
    assert_error(rest.get("/v1/trainingJobs/no-such-job"), 404, 5, "no-such-job")


def test_list_training_jobs(edge: Edge) -> None:
    """Newest first, so whatever jobs other tests started: the edge's own job is listed, and a
    page of one holds the newest."""
    reply = edge.rest.get("/v1/trainingJobs")
    assert reply.status == 200
    jobs = reply.body["jobs"]
    assert edge.job.job_id in [job["jobId"] for job in jobs]
    created = [nanoseconds(job["createdAt"]) for job in jobs]
    assert created == sorted(created, reverse=True)
    first = edge.rest.get("/v1/trainingJobs?pageSize=1")
    assert first.status == 200
    assert [job["jobId"] for job in first.body["jobs"]] == [jobs[0]["jobId"]]
    assert_error(edge.rest.get("/v1/trainingJobs?pageSize=101"), 400, 3, "page_size")


def test_start_training_job_invalid_override(rest: Rest) -> None:
    reply = rest.post("/v1/trainingJobs", {"hyperparameters": {"factors": 0}})
    assert_error(reply, 400, 3, "hyperparameters.factors")


def test_one_job_at_a_time_and_cancel(edge: Edge) -> None:
    """ALREADY_EXISTS → 409 while a job runs; cancel; cancelling an ended job → 400."""
    rest = edge.rest
    started = rest.post("/v1/trainingJobs", {"hyperparameters": {"factors": 256, "epochs": 200}})
    assert started.status == 200
    job_id = started.body["job"]["jobId"]
    assert_error(rest.post("/v1/trainingJobs"), 409, 6, job_id)
    cancelled = rest.post(f"/v1/trainingJobs/{job_id}:cancel")
    assert cancelled.status == 200
    assert cancelled.body["job"]["jobId"] == job_id
    watch = edge.via_envoy.trainer.WatchTrainingJob(
        trainer_pb2.WatchTrainingJobRequest(job_id=job_id), timeout=120)
    *_, last = watch
    assert last.job.state == trainer_pb2.JOB_STATE_CANCELLED
    assert_error(rest.post(f"/v1/trainingJobs/{job_id}:cancel"), 400, 9, job_id)


def test_list_model_versions(edge: Edge) -> None:
    reply = edge.rest.get("/v1/modelVersions")
    assert reply.status == 200
    newest = reply.body["versions"][0]
    assert newest["version"] == edge.job.model_version
    assert newest["aliases"] == ["champion"]
    assert newest["mlflowRunId"] == edge.job.mlflow_run_id
    assert RFC3339.match(newest["createdAt"])


def test_promote_model_version(edge: Edge) -> None:
    version = edge.job.model_version
    reply = edge.rest.post(f"/v1/modelVersions/{version}:promote")
    assert reply.status == 200
    assert reply.body["modelVersion"]["version"] == version
    assert reply.body["previousVersion"] == version
    assert_error(edge.rest.post("/v1/modelVersions/999:promote"), 404, 5, "999")
