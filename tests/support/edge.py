"""The edge under test (tests/integration/edge): what its fixture serves, the data the model
behind it is trained on, and how it is trained, all through Envoy."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from recsys.trainer.v1 import trainer_pb2
from scripts.localstack.envoy import Envoy
from scripts.localstack.pki import Pki
from services.trainer.app import TrainerApp
from tests.support.clients import Rest, Stubs
from tests.support.polling import eventually

TOPIC = "edge-interactions"
MODEL = "edge-mf"
USERS = [f"u{i:02d}" for i in range(40)]
ITEMS = [f"i{i:02d}" for i in range(30)]


@dataclass(frozen=True)
class Edge:
    envoy: Envoy
    rest: Rest  # HTTPS with a token of every scope
    via_envoy: Stubs  # gRPC through Envoy's TLS listener, with the same token
    direct: Stubs  # gRPC straight to each service
    ports: dict[str, int]  # each service's own gRPC port
    job: trainer_pb2.TrainingJob  # the job that trained the served model
    pki: Pki
    token: str  # every scope


def taste_group_clicks() -> list[dict[str, Any]]:
    """Three taste groups of users, each mostly clicking its own third of the items, as the
    REST API takes them (lowerCamelCase JSON)."""
    rng = random.Random(42)
    start = datetime.now(UTC) - timedelta(days=1)
    events: list[dict[str, Any]] = []
    for n, user in enumerate(USERS):
        group = n % 3
        liked = ITEMS[group * 10:(group + 1) * 10]
        for item in rng.sample(liked, 7) + rng.sample(ITEMS, 2):
            at = start + timedelta(seconds=len(events))
            events.append({"userId": user, "itemId": item, "type": "INTERACTION_TYPE_CLICK",
                           "occurredAt": at.isoformat().replace("+00:00", "Z")})
    return events


def train_through_the_edge(rest: Rest, stubs: Stubs,
                           trainer: TrainerApp) -> trainer_pb2.TrainingJob:
    """Ingest the clicks and train on them, all through Envoy; the finished job."""
    events = taste_group_clicks()
    # Ingest answers UNAVAILABLE until it has seen its broker: the first event is the probe.
    eventually(lambda: rest.post("/v1/interactions:batchCreate",
                                 {"interactions": events[:1]}).status == 200,
               timeout=60, what="ingest reaching Kafka")
    for start in range(1, len(events), 1000):
        reply = rest.post("/v1/interactions:batchCreate",
                          {"interactions": events[start:start + 1000], "allOrNothing": True})
        assert reply.status == 200, reply.body
    eventually(lambda: trainer.store is not None and trainer.store.row_count >= len(events),
               timeout=60, what="the trainer storing every event")
    reply = rest.post("/v1/trainingJobs", {"hyperparameters": {"factors": 8, "epochs": 8}})
    assert reply.status == 200, reply.body
    request = trainer_pb2.WatchTrainingJobRequest(job_id=reply.body["job"]["jobId"])
    *_, last = stubs.trainer.WatchTrainingJob(request, timeout=120)
    assert last.job.state == trainer_pb2.JOB_STATE_SUCCEEDED, last.job
    assert last.job.promoted, last.job.promotion_reason
    return last.job
