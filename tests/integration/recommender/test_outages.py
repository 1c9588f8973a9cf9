"""Dependencies failing after start: Redis stopped and restarted, MLflow stopped."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from recsys.recommender.v1 import recommender_pb2
from scripts.localstack.components import MlflowServer, RedisServer
from tests.integration.recommender.conftest import ReplicaFactory, publish
from tests.unit.recommender.artifacts import small_artifact

pytestmark = pytest.mark.integration

HITS = "recsys_recommender_cache_requests_total"


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of this test's own: the test stops it."""
    with RedisServer(tmp_path / "redis") as server:
        yield server


@pytest.fixture
def own_mlflow(tmp_path: Path) -> Iterator[MlflowServer]:
    """An MLflow of this test's own: the test stops it."""
    server = MlflowServer(tmp_path / "mlflow")
    server.start().wait_ready(90)
    try:
        yield server
    finally:
        server.stop()


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
        async with asyncio.timeout(20):  # the breaker lets a call through after its cool-down
            while r.metric(HITS, result="hit") == hits:
                await r.recommend("u9")
                await asyncio.sleep(0.1)


async def test_without_mlflow_the_loaded_model_keeps_serving(
        replica: ReplicaFactory, own_mlflow: MlflowServer, redis_server: RedisServer,
        model_name: str, tmp_path: Path) -> None:
    version = publish(own_mlflow.tracking_uri, model_name, small_artifact(), tmp_path)
    async with replica(mlflow_tracking_uri=own_mlflow.tracking_uri,
                       redis_url=redis_server.url) as r:
        await r.wait_for_version(version)
        await asyncio.to_thread(own_mlflow.stop)
        failures = r.metric("recsys_recommender_model_load_failures_total")
        async with asyncio.timeout(20):  # failed polls are counted, and answers go on
            while r.metric("recsys_recommender_model_load_failures_total") < failures + 2:
                reply = await r.recommend("u1", k=5)
                assert (len(reply.items), reply.model_version) == (5, version)
                await asyncio.sleep(0.1)
        assert await r.serving()
