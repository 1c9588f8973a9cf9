"""Serving the MLflow champion: answers, similar items, hot swap under load, the Redis cache."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import numpy as np
import pytest
import redis

from recsys.recommender.v1 import recommender_pb2
from scripts.localstack.components import MlflowServer, RedisServer
from services.recommender.cache import Keys
from tests.support.artifacts import small_artifact
from tests.support.model_registry import publish
from tests.support.polling import eventually_async
from tests.support.recommender_replica import ReplicaFactory

pytestmark = pytest.mark.integration

OUTCOMES = "recsys_recommender_cache_requests_total"


async def test_recommend_returns_k_items_none_from_training(
        replica: ReplicaFactory, servers: dict[str, str], model_name: str,
        tmp_path: Path) -> None:
    artifact = small_artifact()
    version = publish(servers["mlflow_tracking_uri"], model_name, artifact, tmp_path)
    async with replica(**servers) as r:
        await r.wait_for_version(version)
        assert r.metric("recsys_recommender_top_lists") == 1  # answers below come from them
        for user in (0, 7, 33):
            reply = await r.recommend(f"u{user}", k=10)
            assert (reply.model_version, reply.strategy) == \
                (version, recommender_pb2.STRATEGY_PERSONALIZED)
            items = [item.item_id for item in reply.items]
            assert len(items) == len(set(items)) == 10
            training = {str(artifact.item_ids[i]) for i in artifact.seen(user)}
            assert not set(items) & training
        info = await r.stub.GetModelInfo(recommender_pb2.GetModelInfoRequest(), timeout=5)
        assert (info.model_version, info.model_name, info.item_count) == \
            (version, model_name, 120)
        assert info.metrics.ndcg_at_10 == 0.25
        assert info.lineage.row_count == len(artifact.seen_indices)


async def test_similar_items_are_closer_than_a_random_item(
        replica: ReplicaFactory, servers: dict[str, str], model_name: str,
        tmp_path: Path) -> None:
    artifact = small_artifact()
    version = publish(servers["mlflow_tracking_uri"], model_name, artifact, tmp_path)
    unit = artifact.item_factors / np.linalg.norm(artifact.item_factors, axis=1, keepdims=True)
    index = {str(item): n for n, item in enumerate(artifact.item_ids)}
    rng = np.random.default_rng(3)
    async with replica(**servers) as r:
        await r.wait_for_version(version)
        for item in (5, 50, 100):
            reply = await r.stub.SimilarItems(
                recommender_pb2.SimilarItemsRequest(item_id=f"i{item}", k=5), timeout=5)
            assert reply.model_version == version
            cosines = [float(unit[item] @ unit[index[s.item_id]]) for s in reply.items]
            np.testing.assert_allclose([s.score for s in reply.items], cosines, rtol=1e-4)
            others = sorted(set(range(artifact.n_items)) - {item} -
                            {index[s.item_id] for s in reply.items})
            random_item = int(rng.choice(others))
            assert min(cosines) > float(unit[item] @ unit[random_item])


async def test_promoting_a_version_under_load_switches_once_without_failures(
        replica: ReplicaFactory, servers: dict[str, str], model_name: str,
        tmp_path: Path) -> None:
    uri = servers["mlflow_tracking_uri"]
    first = publish(uri, model_name, small_artifact(seed=0), tmp_path)
    async with replica(**servers) as r:
        await r.wait_for_version(first)
        stop = asyncio.Event()
        failures: list[grpc.aio.AioRpcError] = []
        sequences: list[list[str]] = [[] for _ in range(4)]  # each client's answers' versions

        async def client(user: str, seen: list[str]) -> None:
            while not stop.is_set():
                try:
                    seen.append((await r.recommend(user, k=5)).model_version)
                except grpc.aio.AioRpcError as exc:
                    failures.append(exc)

        clients = [asyncio.create_task(client(f"u{n}", seen))
                   for n, seen in enumerate(sequences)]
        await eventually_async(lambda: all(sequences), timeout=30,
                               what="every client answered by the first version")
        second = await asyncio.to_thread(publish, uri, model_name, small_artifact(seed=1),
                                         tmp_path)
        await r.wait_for_version(second)
        await eventually_async(lambda: all(seen[-1:] == [second] for seen in sequences),
                               timeout=30, what="every client answered by the second version")
        stop.set()
        await asyncio.gather(*clients)
    assert failures == []
    for seen in sequences:
        assert set(seen) == {first, second}
        switch = seen.index(second)
        assert seen == [first] * switch + [second] * (len(seen) - switch)


async def test_a_cached_answer_is_shared_through_redis_until_a_swap(
        replica: ReplicaFactory, servers: dict[str, str], model_name: str,
        tmp_path: Path) -> None:
    uri = servers["mlflow_tracking_uri"]
    first = publish(uri, model_name, small_artifact(seed=0), tmp_path)
    # Without top lists every answer is scored, and a scored answer is worth sharing.
    async with replica(**servers, top_lists_max_cells=0) as a, \
            replica(**servers, top_lists_max_cells=0) as b:
        await a.wait_for_version(first)
        await b.wait_for_version(first)
        computed = await a.recommend("u5", k=7)
        assert a.metric("recsys_recommender_cache_requests_total", result="miss") == 1
        # The answer is written behind the reply.
        await eventually_async(lambda: _written(servers["redis_url"], "u5"), timeout=10,
                               what="u5's answer written to Redis")
        cached = await b.recommend("u5", k=7)
        assert b.metric("recsys_recommender_cache_requests_total", result="hit",
                        tier="redis") == 1
        assert b.metric("recsys_recommender_cache_requests_total", result="miss") == 0
        assert cached == computed
        await b.recommend("u5", k=7)  # again: from b's own memory, or Redis

        second = publish(uri, model_name, small_artifact(seed=1), tmp_path)
        await b.wait_for_version(second)
        after = await b.recommend("u5", k=7)
        assert after.model_version == second
        assert b.metric("recsys_recommender_cache_requests_total", result="miss") == 1
        assert b.metric("recsys_recommender_cache_requests_total", result="hit") == 2


async def test_a_listed_answer_needs_no_redis_call_once_the_users_history_is_held(
        replica: ReplicaFactory, mlflow_server: MlflowServer, own_redis: RedisServer,
        model_name: str, tmp_path: Path) -> None:
    version = publish(mlflow_server.tracking_uri, model_name, small_artifact(), tmp_path)
    excluded = (f"i{n}" for n in range(1_000))  # each request a new answer key: never a hit
    async with replica(mlflow_tracking_uri=mlflow_server.tracking_uri,
                       redis_url=own_redis.url) as r:
        await r.wait_for_version(version)

        async def held() -> bool:
            await r.recommend("u5", k=5, exclude_item_ids=[next(excluded)])
            return r.metric(OUTCOMES, result="miss", tier="local") == 1

        await eventually_async(held, timeout=10, what="u5's history held in process")
        calls = _script_calls(own_redis.url)
        for _ in range(5):
            reply = await r.recommend("u5", k=5, exclude_item_ids=[next(excluded)])
            assert reply.strategy == recommender_pb2.STRATEGY_PERSONALIZED
        assert r.metric(OUTCOMES, result="miss", tier="local") == 6
        assert _script_calls(own_redis.url) == calls
        # Listed answers were never written; a scored one (training items kept) is, after them.
        await r.recommend("u5", k=5, exclude_seen=False)
        await eventually_async(lambda: _written(own_redis.url, "u5"), timeout=10,
                               what="the scored answer written to Redis")
        assert _answer_keys(own_redis.url, "u5") == 1


def _script_calls(redis_url: str) -> int:
    """Calls of Lua scripts Redis has run (each of the cache's round trips is one)."""
    client = redis.Redis.from_url(redis_url)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return sum(int(stats.get(name, {}).get("calls", 0))
               for name in ("cmdstat_evalsha", "cmdstat_eval"))


def _answer_keys(redis_url: str, user: str) -> int:
    client = redis.Redis.from_url(redis_url)
    try:
        return len(client.keys(Keys.answer(user, "*")))
    finally:
        client.close()


def _written(redis_url: str, user: str) -> bool:
    """Whether an answer for `user` is in Redis."""
    return _answer_keys(redis_url, user) > 0
