"""Serving with the catalogue against the real broker, Redis and MLflow: changes made through
CatalogService (on a real ingest server) reach the recommender through the catalogue topic:
hidden items leave every answer, cached ones included; category filters; items and users the
model does not know; a restarted replica rebuilds the same catalogue; an erased user's Redis
keys go and they are answered as unknown."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import redis

from recsys.catalog.v1 import catalog_pb2
from recsys.events.v1.catalog_pb2 import Item, User
from recsys.ingest.v1 import ingest_pb2
from recsys.recommender.v1 import recommender_pb2
from scripts.localstack.components import RedisServer, TansuBroker
from services.ingest.catalog_servicer import SERVICE as CATALOG_SERVICE
from services.model.artifact import ModelArtifact
from services.recommender.cache import Keys
from tests.support.artifacts import small_artifact
from tests.support.events import rating_event
from tests.support.ingest_server import SERVING, Ingest, start_ingest
from tests.support.model_registry import publish
from tests.support.polling import eventually_async
from tests.support.recommender_replica import Replica, ReplicaFactory

pytestmark = pytest.mark.integration

USERS = [f"u{n}" for n in range(0, 60, 5)]


def category(item: int) -> str:
    """small_artifact's users each like one cluster: item % 4."""
    return f"c{item % 4}"


@pytest.fixture(scope="module")
def artifact() -> ModelArtifact:
    return small_artifact()


@pytest.fixture
def version(servers: dict[str, str], model_name: str, artifact: ModelArtifact,
            tmp_path: Path) -> str:
    """small_artifact registered as the test model's champion."""
    return publish(servers["mlflow_tracking_uri"], model_name, artifact, tmp_path)


@pytest.fixture
async def ingest(kafka: TansuBroker) -> AsyncIterator[Ingest]:
    """An ingest server whose catalogue topic is the test's own, holding every model item in
    its cluster's category."""
    running = await start_ingest(kafka.bootstrap)
    await running.wait_health(SERVING, CATALOG_SERVICE)
    reply = await running.catalog.BatchUpsertItems(catalog_pb2.BatchUpsertItemsRequest(items=[
        Item(item_id=f"i{n}", categories=[category(n)], labels=[f"cluster:{n % 4}"])
        for n in range(120)]), timeout=10)
    assert reply.accepted_count == 120
    yield running
    await running.stop()


@pytest.fixture
def catalog_settings(servers: dict[str, str], kafka: TansuBroker, ingest: Ingest,
                     own_redis: RedisServer) -> dict[str, object]:
    """A replica following the test's catalogue topic, with a Redis of the test's own (no
    history another test left for the same user ids changes what is left to answer)."""
    return {**servers, "redis_url": own_redis.url, "catalog_consumer": True,
            "kafka_bootstrap": kafka.bootstrap, "catalog_topic": ingest.settings.catalog_topic}


async def model_info(r: Replica) -> recommender_pb2.GetModelInfoResponse:
    return await r.stub.GetModelInfo(recommender_pb2.GetModelInfoRequest(), timeout=5)


async def catalog_read(r: Replica, *, items: int, blocked: int = 0) -> str:
    """Until the replica's catalogue holds `items` items, `blocked` of them blocked; its
    version."""
    async def summary() -> str | None:
        catalog = (await model_info(r)).catalog
        return catalog.version if (catalog.items, catalog.blocked_items) == (items, blocked) \
            else None

    return await eventually_async(summary, timeout=10,
                                  what=f"{items} items, {blocked} blocked, read by the replica")


async def test_a_hidden_item_leaves_every_answer_cached_ones_included(
        replica: ReplicaFactory, catalog_settings: dict[str, object], version: str,
        ingest: Ingest) -> None:
    async with replica(**catalog_settings) as r:
        await r.wait_for_version(version)
        await catalog_read(r, items=120)
        before = {user: await r.recommend(user, k=10) for user in USERS}
        counts: dict[str, int] = {}
        for reply in before.values():
            for item in reply.items:
                counts[item.item_id] = counts.get(item.item_id, 0) + 1
        popular = max(counts, key=lambda item: counts[item])
        hits = r.metric("recsys_recommender_cache_requests_total", result="hit")
        assert [await r.recommend(user, k=10) for user in USERS] == list(before.values())
        assert r.metric("recsys_recommender_cache_requests_total", result="hit") \
            == hits + len(USERS)  # every answer is cached now

        await ingest.catalog.HideItem(catalog_pb2.HideItemRequest(item_id=popular), timeout=10)
        await catalog_read(r, items=120, blocked=1)
        assert (r.metric("recsys_recommender_catalog_items"),
                r.metric("recsys_recommender_catalog_blocked_items")) == (120, 1)
        for user in USERS:
            reply = await r.recommend(user, k=10)
            assert popular not in [item.item_id for item in reply.items]
            assert len(reply.items) == 10
        similar = await r.stub.SimilarItems(recommender_pb2.SimilarItemsRequest(
            item_id="i0" if popular != "i0" else "i1", k=100), timeout=5)
        assert popular not in [item.item_id for item in similar.items]

        await ingest.catalog.UnhideItem(catalog_pb2.UnhideItemRequest(item_id=popular),
                                        timeout=10)
        await catalog_read(r, items=120)
        assert [await r.recommend(user, k=10) for user in USERS] == list(before.values())


async def test_a_category_filter_returns_only_that_category_and_k_items(
        replica: ReplicaFactory, catalog_settings: dict[str, object], version: str,
        ingest: Ingest) -> None:
    await ingest.catalog.HideItem(catalog_pb2.HideItemRequest(item_id="i2"), timeout=10)
    async with replica(**catalog_settings) as r:
        await r.wait_for_version(version)
        await catalog_read(r, items=120, blocked=1)
        for user in USERS:
            for wanted in (["c2"], ["c1", "c3"]):
                reply = await r.recommend(user, k=20, categories=wanted)
                items = [int(item.item_id[1:]) for item in reply.items]
                assert len(items) == 20
                assert {category(n) for n in items} <= set(wanted)
                assert 2 not in items
        similar = await r.stub.SimilarItems(recommender_pb2.SimilarItemsRequest(
            item_id="i5", k=10, categories=["c2"]), timeout=5)
        assert len(similar.items) == 10
        assert {category(int(item.item_id[1:])) for item in similar.items} == {"c2"}
        assert "i2" not in [item.item_id for item in similar.items]
        nothing = await r.recommend("u1", k=5, categories=["no-such-category"])
        assert list(nothing.items) == []
        assert r.metric("recsys_recommender_filtered_requests_total", rpc="recommend") == \
            2 * len(USERS) + 1
        assert r.metric("recsys_recommender_filtered_requests_total", rpc="similar") == 1


async def test_a_new_item_is_recommended_by_its_labels_before_any_retrain(
        replica: ReplicaFactory, catalog_settings: dict[str, object], version: str,
        ingest: Ingest) -> None:
    async with replica(**catalog_settings) as r:
        await r.wait_for_version(version)
        await ingest.catalog.BatchUpsertItems(catalog_pb2.BatchUpsertItemsRequest(items=[
            Item(item_id="new-book", categories=["c1"], labels=["cluster:1"])]), timeout=10)
        await catalog_read(r, items=121)
        for user in ("u1", "u5", "u9", "u13"):  # they like cluster 1
            reply = await r.recommend(user, k=20)
            assert reply.strategy == recommender_pb2.STRATEGY_PERSONALIZED
            assert [item.item_id for item in reply.items if item.cold_start] == ["new-book"]
        for user in ("u0", "u4", "u2", "u3"):  # they do not
            reply = await r.recommend(user, k=20)
            assert "new-book" not in [item.item_id for item in reply.items]
        filtered = await r.recommend("u1", k=20, categories=["c1"])
        assert "new-book" in [item.item_id for item in filtered.items]
        similar = await r.stub.SimilarItems(recommender_pb2.SimilarItemsRequest(
            item_id="new-book", k=10), timeout=5)
        assert similar.cold_start
        assert r.metric("recsys_recommender_catalog_cold_start_items") == 1
        assert r.metric("recsys_recommender_cold_start_answers_total") == 5  # u1, u5, u9, u13
        assert sum(int(item.item_id[1:]) % 4 == 1 for item in similar.items) >= 8


async def test_a_user_with_labels_and_no_history_gets_label_popularity(
        replica: ReplicaFactory, catalog_settings: dict[str, object], version: str,
        ingest: Ingest) -> None:
    await ingest.catalog.BatchUpsertUsers(catalog_pb2.BatchUpsertUsersRequest(users=[
        *(User(user_id=f"u{n}", labels=[f"segment:{n % 4}"]) for n in range(60)),
        User(user_id="newcomer", labels=["segment:3"])]), timeout=10)
    async with replica(**catalog_settings) as r:
        await r.wait_for_version(version)
        await eventually_async(lambda: _users(r, 61), timeout=10, what="61 profiles read")
        reply = await r.recommend("newcomer", k=10)
        assert reply.strategy == recommender_pb2.STRATEGY_LABEL_POPULARITY
        assert sum(int(item.item_id[1:]) % 4 == 3 for item in reply.items) >= 8
        stranger = await r.recommend("stranger", k=10)
        assert stranger.strategy == recommender_pb2.STRATEGY_POPULARITY


async def _users(r: Replica, count: int) -> bool:
    return (await model_info(r)).catalog.users == count


async def test_a_restarted_replica_rebuilds_the_same_catalogue(
        replica: ReplicaFactory, catalog_settings: dict[str, object], version: str,
        ingest: Ingest) -> None:
    await ingest.catalog.HideItem(catalog_pb2.HideItemRequest(item_id="i9"), timeout=10)
    await ingest.catalog.DeleteItem(catalog_pb2.DeleteItemRequest(item_id="i13"), timeout=10)
    async with replica(**catalog_settings) as first:
        await first.wait_for_version(version)
        seen = await catalog_read(first, items=119, blocked=1)
        answers = [await first.recommend(user, k=10, categories=["c1"]) for user in USERS]
    async with replica(**catalog_settings) as second:
        # SERVING only once the topic is read to its end: the first answer already knows.
        # (GetModelInfo answers as soon as the model is loaded, before that: wait for health.)
        await second.wait_for_version(version)
        await eventually_async(second.serving, timeout=30, what="SERVING after the catalogue")
        info = await model_info(second)
        assert (info.catalog.version, info.catalog.items, info.catalog.blocked_items) == \
            (seen, 119, 1)
        assert [await second.recommend(user, k=10, categories=["c1"]) for user in USERS] \
            == answers
        for answer in answers:
            assert not {"i9", "i13"} & {item.item_id for item in answer.items}


@pytest.mark.parametrize(("call", "request_"), [
    ("Recommend", recommender_pb2.RecommendRequest(user_id="u1", categories=["x" * 65])),
    ("Recommend", recommender_pb2.RecommendRequest(user_id="u1", categories=["a"] * 17)),
    ("SimilarItems", recommender_pb2.SimilarItemsRequest(item_id="i1", categories=[""])),
])
async def test_a_bad_category_filter_is_invalid_argument_naming_the_field(
        replica: ReplicaFactory, catalog_settings: dict[str, object], version: str,
        call: str, request_: object) -> None:
    async with replica(**catalog_settings) as r:
        await r.wait_for_version(version)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await getattr(r.stub, call)(request_, timeout=5)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (caught.value.details() or "").startswith("categories: ")


async def test_an_erased_user_leaves_redis_and_is_answered_as_unknown(
        replica: ReplicaFactory, catalog_settings: dict[str, object], version: str,
        ingest: Ingest, own_redis: RedisServer) -> None:
    settings = {**catalog_settings, "kafka_topic": ingest.topic,
                "history_consumer": True}
    client = redis.Redis.from_url(own_redis.url)
    async with replica(**settings) as r:
        await r.wait_for_version(version)
        events = [rating_event(n, user_id=user, item_id=f"i{n}")
                  for n, user in ((1, "u3"), (2, "u3"), (5, "stranger"))]
        await ingest.stub.BatchCreateInteractions(ingest_pb2.BatchCreateInteractionsRequest(
            interactions=events), timeout=10)
        await eventually_async(lambda: r.metric("recsys_recommender_history_events_total") == 3,
                               timeout=20, what="the three events in Redis")
        assert (await r.recommend("u3")).strategy == recommender_pb2.STRATEGY_PERSONALIZED
        # Training items kept, so scored over the catalogue (not from the top list) and
        # cached in Redis.
        assert (await r.recommend("u3", exclude_seen=False)).items
        assert (await r.recommend("stranger")).strategy == recommender_pb2.STRATEGY_FOLD_IN
        assert client.exists(Keys.history("u3"), Keys.generation("u3")) == 2
        await eventually_async(lambda: bool(list(client.scan_iter(match=Keys.answer("u3", "*")))),
                               timeout=10, what="u3's scored answer written to Redis")

        await ingest.catalog.EraseUser(catalog_pb2.EraseUserRequest(
            user_id="u3", requested_by="test"), timeout=10)
        await eventually_async(lambda: r.metric("recsys_recommender_erasures_total") == 1,
                               timeout=10, what="the erasure applied")
        assert client.exists(Keys.history("u3"), Keys.generation("u3")) == 0
        assert not list(client.scan_iter(match=Keys.answer("u3", "*")))
        assert (await r.recommend("u3")).strategy == recommender_pb2.STRATEGY_POPULARITY
        assert client.exists(Keys.history("stranger")) == 1  # nobody else's
        assert (await r.recommend("stranger")).strategy == recommender_pb2.STRATEGY_FOLD_IN
    client.close()
