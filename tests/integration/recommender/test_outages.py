"""Dependencies failing after start: Redis stopped and restarted, MLflow stopped."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
import redis
from kafka import KafkaProducer

from recsys.events.v1 import interaction_pb2
from recsys.recommender.v1 import recommender_pb2
from scripts.localstack.components import MlflowServer, RedisServer, TansuBroker
from services.core.kafka import producer_config
from services.recommender.cache import Keys
from tests.support.artifacts import small_artifact
from tests.support.model_registry import publish
from tests.support.polling import eventually_async
from tests.support.recommender_replica import ReplicaFactory

pytestmark = pytest.mark.integration

HITS = "recsys_recommender_cache_requests_total"


async def test_without_redis_answers_continue_and_caching_resumes_after(
        replica: ReplicaFactory, mlflow_server: MlflowServer, own_redis: RedisServer,
        model_name: str, tmp_path: Path) -> None:
    version = publish(mlflow_server.tracking_uri, model_name, small_artifact(), tmp_path)
    async with replica(mlflow_tracking_uri=mlflow_server.tracking_uri, redis_url=own_redis.url,
                       redis_cooldown_s=0.2) as r:
        await r.wait_for_version(version)
        await r.recommend("u1")
        await r.recommend("u1")
        assert r.metric(HITS, result="hit") == 1

        await asyncio.to_thread(own_redis.stop)
        for user in ("u1", "u2", "u3", "u4"):
            reply = await r.recommend(user)
            assert (len(reply.items), reply.model_version) == (10, version)
            assert reply.strategy == recommender_pb2.STRATEGY_PERSONALIZED
        assert r.metric(HITS, result="error") >= 1
        assert r.metric("recsys_recommender_redis_errors_total") >= 1
        assert await r.serving()

        await asyncio.to_thread(own_redis.start().wait_ready, 20)
        hits = r.metric(HITS, result="hit")

        async def cached_again() -> bool:
            await r.recommend("u9")
            return r.metric(HITS, result="hit") > hits

        # The breaker lets a call through after its cool-down; then answers are cached again.
        await eventually_async(cached_again, timeout=30, what="a cache hit after Redis is back")


async def test_without_mlflow_the_loaded_model_keeps_serving(
        replica: ReplicaFactory, own_mlflow: MlflowServer, redis_server: RedisServer,
        model_name: str, tmp_path: Path) -> None:
    version = publish(own_mlflow.tracking_uri, model_name, small_artifact(), tmp_path)
    async with replica(mlflow_tracking_uri=own_mlflow.tracking_uri,
                       redis_url=redis_server.url) as r:
        await r.wait_for_version(version)
        await asyncio.to_thread(own_mlflow.stop)
        failures = r.metric("recsys_recommender_model_load_failures_total")

        replies: list[recommender_pb2.RecommendResponse] = []

        async def answered_through_failed_polls() -> bool:
            replies.append(await r.recommend("u1", k=5))
            return r.metric("recsys_recommender_model_load_failures_total") >= failures + 2

        # Failed polls are counted, and answers go on.
        await eventually_async(answered_through_failed_polls, timeout=30,
                               what="two failed polls of the stopped MLflow")
        assert {(len(reply.items), reply.model_version) for reply in replies} == {(5, version)}
        assert await r.serving()


async def test_history_read_while_redis_is_down_is_written_once_it_is_back(
        replica: ReplicaFactory, mlflow_server: MlflowServer, own_redis: RedisServer,
        kafka: TansuBroker) -> None:
    topic = f"interactions-{uuid.uuid4().hex[:8]}"
    async with replica(mlflow_tracking_uri=mlflow_server.tracking_uri, redis_url=own_redis.url,
                       kafka_bootstrap=kafka.bootstrap, kafka_topic=topic,
                       history_consumer=True) as r:
        await asyncio.to_thread(own_redis.stop)
        event = interaction_pb2.Interaction(event_id="e1", user_id="u1", item_id="i7")
        producer = KafkaProducer(**producer_config(kafka.bootstrap, client_id="outage-test"))
        try:
            await asyncio.to_thread(lambda: producer.send(
                topic, key=b"u1", value=event.SerializeToString()).get(timeout=10))
        finally:
            await asyncio.to_thread(producer.close)

        # The consumer joins its group, reads the event, and Redis fails.
        await eventually_async(lambda: r.metric("recsys_recommender_redis_errors_total",
                                                operation="history") >= 1,
                               timeout=30, what="a history write failing on Redis")
        assert r.metric("recsys_recommender_history_errors_total") >= 1
        assert r.metric("recsys_recommender_history_events_total") == 0

        await asyncio.to_thread(own_redis.start().wait_ready, 20)
        # The batch is retried until Redis takes it.
        await eventually_async(lambda: r.metric("recsys_recommender_history_events_total") == 1,
                               timeout=30, what="the history written once Redis is back")
        client = redis.Redis.from_url(own_redis.url)
        try:
            assert client.lrange(Keys.history("u1"), 0, -1) == [b"i7"]
        finally:
            client.close()
