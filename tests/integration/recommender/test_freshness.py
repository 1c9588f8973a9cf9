"""Recent interactions from the topic: excluded on every replica, through Redis; fold-in.

How soon (the freshness p50/p99 from a broker's ack to a changed answer) is a benchmark's
figure, not a test's."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic

from recsys.events.v1 import interaction_pb2
from recsys.recommender.v1 import recommender_pb2
from scripts.localstack.components import MlflowServer, RedisServer, TansuBroker
from services.core.kafka import producer_config
from tests.support.artifacts import small_artifact
from tests.support.model_registry import publish
from tests.support.polling import eventually_async
from tests.support.recommender_replica import Replica, ReplicaFactory

pytestmark = pytest.mark.integration


def _create_topic(bootstrap: str, topic: str) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
    finally:
        admin.close()


def _produce(producer: KafkaProducer, topic: str, user: str, item: str) -> None:
    """One view event, keyed by user as IngestService publishes it; returns once acked."""
    now = Timestamp()
    now.GetCurrentTime()
    event = interaction_pb2.Interaction(
        event_id=uuid.uuid4().hex, user_id=user, item_id=item,
        type=interaction_pb2.INTERACTION_TYPE_VIEW, occurred_at=now, ingested_at=now)
    producer.send(topic, key=user.encode(), value=event.SerializeToString()).get(timeout=10)


async def answer_until(replica: Replica, user: str,
                       done: Callable[[recommender_pb2.RecommendResponse], bool],
                       what: str) -> recommender_pb2.RecommendResponse:
    """Ask Recommend for `user` until `done(reply)`; that reply."""
    async def answer() -> recommender_pb2.RecommendResponse | None:
        reply = await replica.recommend(user, k=10)
        return reply if done(reply) else None

    return await eventually_async(answer, timeout=30, what=what)


@pytest.fixture
def common(mlflow_server: MlflowServer, own_redis: RedisServer,
           kafka: TansuBroker) -> dict[str, str]:
    """Replica settings: the session's MLflow, and a Redis and a topic of the test's own (the
    users' histories it writes are seen by no other test)."""
    topic = f"interactions-{uuid.uuid4().hex[:8]}"
    _create_topic(kafka.bootstrap, topic)
    return {"mlflow_tracking_uri": mlflow_server.tracking_uri, "redis_url": own_redis.url,
            "kafka_bootstrap": kafka.bootstrap, "kafka_topic": topic}


async def test_an_interaction_leaves_the_users_recommendations_on_every_replica(
        replica: ReplicaFactory, common: dict[str, str], model_name: str,
        tmp_path: Path) -> None:
    topic, bootstrap = common["kafka_topic"], common["kafka_bootstrap"]
    version = publish(common["mlflow_tracking_uri"], model_name, small_artifact(), tmp_path)
    producer = KafkaProducer(**producer_config(bootstrap, client_id="recommender-test"))
    # Only `writer` consumes; `reader` hears of new events through Redis alone.
    async with replica(**common, history_consumer=True) as writer, \
            replica(**common) as reader:
        await writer.wait_for_version(version)
        await reader.wait_for_version(version)

        # A user the model does not know is folded in from their events (this also waits
        # for the consumer to join its group).
        for item in ("i3", "i7"):
            await asyncio.to_thread(_produce, producer, topic, "newcomer", item)
        folded = await answer_until(
            reader, "newcomer", lambda r: r.strategy == recommender_pb2.STRATEGY_FOLD_IN,
            "the newcomer folded in from their events")
        assert {"i3", "i7"}.isdisjoint(item.item_id for item in folded.items)

        # u1's answer is cached (in Redis and in the reader's memory) ...
        top = (await reader.recommend("u1", k=10)).items[0].item_id
        assert (await reader.recommend("u1", k=10)).items[0].item_id == top
        hits = reader.metric("recsys_recommender_cache_requests_total", result="hit")
        assert hits >= 1
        # ... and an event for its top item removes it from the reader's answer too.
        await asyncio.to_thread(_produce, producer, topic, "u1", top)
        await answer_until(reader, "u1", lambda r: top not in {i.item_id for i in r.items},
                           f"{top} left u1's answer")
        # The writer counts a batch just after Redis took it.
        await eventually_async(
            lambda: writer.metric("recsys_recommender_history_events_total") == 3,
            timeout=10, what="the writer counting the three events it wrote")
    producer.close()
