"""RecommenderService through a real gRPC server and a real MLflow, with Redis and Kafka down
(closed ports): health, validation, answers, model info and the swap of a moved alias."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2

from recsys.recommender.v1 import recommender_pb2
from scripts.localstack.components import MlflowServer, free_port
from services.core.contract import ID_RULE
from services.model.lineage import Lineage
from tests.support.artifacts import small_artifact
from tests.support.model_registry import publish, register
from tests.support.polling import eventually_async
from tests.support.recommender_replica import Replica, ReplicaFactory

pytestmark = pytest.mark.integration

Request = recommender_pb2.RecommendRequest
METRICS = {"precision_at_10": 0.25, "ndcg_at_10": 0.5, "users_evaluated": 40.0}
LINEAGE = Lineage(topic="interactions", row_count=600, content_hash="ab" * 32,
                  partition_offsets={0: 400, 1: 200}, user_count=60, item_count=120)


@pytest.fixture
def offline(replica: ReplicaFactory, mlflow_server: MlflowServer) -> ReplicaFactory:
    """A replica whose Redis and Kafka are closed ports: served without cache or history."""

    @asynccontextmanager
    async def start() -> AsyncIterator[Replica]:
        async with replica(mlflow_tracking_uri=mlflow_server.tracking_uri,
                           redis_url=f"redis://127.0.0.1:{free_port()}/0", local_cache_size=0,
                           poll_interval_s=0.05, max_k=50) as r:
            yield r

    return start


@pytest.fixture
def champion(mlflow_server: MlflowServer, model_name: str, tmp_path: Path) -> Callable[[], str]:
    """`champion()`: a new champion version of the test's model (`small_artifact()`, METRICS
    and LINEAGE); its number."""
    return lambda: publish(mlflow_server.tracking_uri, model_name, small_artifact(), tmp_path,
                           metrics=METRICS, lineage=LINEAGE)


async def _code(call: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await call  # type: ignore[misc]
    return failure.value.code(), failure.value.details() or ""


async def test_not_serving_and_failed_precondition_until_a_model_is_loaded(
        offline: ReplicaFactory, champion: Callable[[], str]) -> None:
    async with offline() as r:
        assert await r.health() == health_pb2.HealthCheckResponse.NOT_SERVING
        for call in (r.stub.Recommend(Request(user_id="u1"), timeout=5),
                     r.stub.SimilarItems(recommender_pb2.SimilarItemsRequest(item_id="i1"),
                                         timeout=5),
                     r.stub.GetModelInfo(recommender_pb2.GetModelInfoRequest(), timeout=5)):
            assert await _code(call) == (grpc.StatusCode.FAILED_PRECONDITION,
                                         "no model loaded yet")
        await r.wait_for_version(champion())
        # Health is set on the loop just after the swap.
        await eventually_async(r.serving, timeout=10, what="health SERVING after the swap")


@pytest.mark.parametrize(("request_", "field"), [
    (Request(user_id=""), "user_id"),
    (Request(user_id="u" * 129), "user_id"),
    (Request(user_id="u1", k=-1), "k"),
    (Request(user_id="u1", k=51), "k"),
    (Request(user_id="u1", exclude_item_ids=[f"i{n}" for n in range(1001)]), "exclude_item_ids"),
])
async def test_bad_recommend_requests_name_the_field(
        offline: ReplicaFactory, champion: Callable[[], str], request_: Request,
        field: str) -> None:
    async with offline() as r:
        await r.wait_for_version(champion())
        code, message = await _code(r.stub.Recommend(request_, timeout=5))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert message.startswith(f"{field}: ")


async def test_ids_that_are_not_printable_are_refused_naming_the_field(
        offline: ReplicaFactory, champion: Callable[[], str]) -> None:
    async with offline() as r:
        await r.wait_for_version(champion())
        for bad in ("u\n1", "u\x001", "no\u00a0break"):
            recommend = r.stub.Recommend(Request(user_id=bad), timeout=5)
            assert await _code(recommend) == (grpc.StatusCode.INVALID_ARGUMENT,
                                              f"user_id: {ID_RULE}")
            similar = r.stub.SimilarItems(
                recommender_pb2.SimilarItemsRequest(item_id=bad), timeout=5)
            assert await _code(similar) == (grpc.StatusCode.INVALID_ARGUMENT,
                                            f"item_id: {ID_RULE}")


async def test_bad_similar_items_requests(offline: ReplicaFactory,
                                          champion: Callable[[], str]) -> None:
    async with offline() as r:
        await r.wait_for_version(champion())
        similar = recommender_pb2.SimilarItemsRequest
        code, message = await _code(r.stub.SimilarItems(similar(item_id=""), timeout=5))
        assert (code, message.split(":")[0]) == (grpc.StatusCode.INVALID_ARGUMENT, "item_id")
        code, message = await _code(r.stub.SimilarItems(similar(item_id="i1", k=51), timeout=5))
        assert (code, message.split(":")[0]) == (grpc.StatusCode.INVALID_ARGUMENT, "k")
        code, message = await _code(r.stub.SimilarItems(similar(item_id="nope"), timeout=5))
        assert code == grpc.StatusCode.NOT_FOUND
        assert "'nope'" in message


async def test_recommend_defaults_to_ten_items_and_names_version_and_strategy(
        offline: ReplicaFactory, champion: Callable[[], str]) -> None:
    async with offline() as r:
        version = champion()
        await r.wait_for_version(version)
        reply = await r.stub.Recommend(Request(user_id="u1"), timeout=5)
        assert len(reply.items) == 10
        assert reply.model_version == version
        assert reply.strategy == recommender_pb2.STRATEGY_PERSONALIZED
        stranger = await r.stub.Recommend(Request(user_id="stranger", k=3), timeout=5)
        assert stranger.strategy == recommender_pb2.STRATEGY_POPULARITY
        assert len(stranger.items) == 3


async def test_without_redis_answers_are_served_and_counted_as_cache_errors(
        offline: ReplicaFactory, champion: Callable[[], str]) -> None:
    async with offline() as r:
        await r.wait_for_version(champion())
        for _ in range(3):
            await r.stub.Recommend(Request(user_id="u1"), timeout=5)
        assert r.metric("recsys_recommender_cache_requests_total",
                        result="error", tier="redis") == 3
        assert r.metric("recsys_recommender_redis_errors_total", operation="lookup") >= 1


async def test_model_info(offline: ReplicaFactory, champion: Callable[[], str],
                          model_name: str) -> None:
    async with offline() as r:
        version = champion()
        await r.wait_for_version(version)
        info = await r.stub.GetModelInfo(recommender_pb2.GetModelInfoRequest(), timeout=5)
        assert (info.model_version, info.model_name, info.alias) == (
            version, model_name, "champion")
        assert (info.user_count, info.item_count, info.factors) == (60, 120, 8)
        assert info.metrics.ndcg_at_10 == 0.5
        assert info.metrics.users_evaluated == 40
        assert dict(info.lineage.partition_offsets) == {0: 400, 1: 200}
        assert info.loaded_at.seconds > 0
        assert (info.scoring.approximate, info.scoring.recall_at_10, info.scoring.scanned_ratio,
                info.scoring.top_lists) == (False, 1.0, 1.0, True)


async def test_a_moved_alias_is_swapped_in(
        offline: ReplicaFactory, champion: Callable[[], str], mlflow_server: MlflowServer,
        model_name: str, tmp_path: Path) -> None:
    async with offline() as r:
        await r.wait_for_version(champion())
        second = register(mlflow_server.tracking_uri, model_name, small_artifact(seed=1),
                          tmp_path, champion=True)
        await r.wait_for_version(second.version)
        reply = await r.stub.Recommend(Request(user_id="u1"), timeout=5)
        assert reply.model_version == second.version
        assert r.metric("recsys_recommender_model_swaps_total") == 2
        assert r.metric("recsys_recommender_model_info", name=model_name,
                        version=second.version, run_id=second.run_id) == 1
