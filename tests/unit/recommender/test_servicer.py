"""RecommenderService through a real gRPC server, with a fake MLflow and no Redis or Kafka."""

from __future__ import annotations

import asyncio
import contextlib

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from recsys.recommender.v1 import recommender_pb2, recommender_pb2_grpc
from services.core.contract import ID_RULE
from services.recommender.servicer import SERVICE_NAME, RecommenderServicer
from tests.unit.recommender.conftest import Served

Request = recommender_pb2.RecommendRequest


async def _serving_version(served: Served, version: str) -> None:
    """Make `version` the champion and wait until GetModelInfo names it."""
    served.source.champion_version = version
    async with asyncio.timeout(5):
        while True:
            with contextlib.suppress(grpc.aio.AioRpcError):
                info = await served.stub.GetModelInfo(recommender_pb2.GetModelInfoRequest(),
                                                      timeout=5)
                if info.model_version == version:
                    return
            await asyncio.sleep(0.02)


async def _health(served: Served) -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{served.running.port}") as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=5)
    return reply.status


async def _code(call: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await call  # type: ignore[misc]
    return failure.value.code(), failure.value.details() or ""


def test_every_rpc_is_implemented() -> None:
    methods = recommender_pb2.DESCRIPTOR.services_by_name["RecommenderService"].methods
    base = recommender_pb2_grpc.RecommenderServiceServicer
    for method in methods:
        assert getattr(RecommenderServicer, method.name) is not getattr(base, method.name)


async def test_not_serving_and_failed_precondition_until_a_model_is_loaded(
        served: Served) -> None:
    assert await _health(served) == health_pb2.HealthCheckResponse.NOT_SERVING
    for call in (served.stub.Recommend(Request(user_id="u1"), timeout=5),
                 served.stub.SimilarItems(recommender_pb2.SimilarItemsRequest(item_id="i1"),
                                          timeout=5),
                 served.stub.GetModelInfo(recommender_pb2.GetModelInfoRequest(), timeout=5)):
        assert await _code(call) == (grpc.StatusCode.FAILED_PRECONDITION, "no model loaded yet")
    await _serving_version(served, "1")
    await asyncio.sleep(0.1)  # health is set on the loop just after the swap
    assert await _health(served) == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize(("request_", "field"), [
    (Request(user_id=""), "user_id"),
    (Request(user_id="u" * 129), "user_id"),
    (Request(user_id="u1", k=-1), "k"),
    (Request(user_id="u1", k=51), "k"),
    (Request(user_id="u1", exclude_item_ids=[f"i{n}" for n in range(1001)]), "exclude_item_ids"),
])
async def test_bad_recommend_requests_name_the_field(served: Served, request_: Request,
                                                     field: str) -> None:
    await _serving_version(served, "1")
    code, message = await _code(served.stub.Recommend(request_, timeout=5))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert message.startswith(f"{field}: ")


async def test_ids_that_are_not_printable_are_refused_naming_the_field(served: Served) -> None:
    await _serving_version(served, "1")
    for bad in ("u\n1", "u\x001", "no\u00a0break"):
        recommend = served.stub.Recommend(Request(user_id=bad), timeout=5)
        assert await _code(recommend) == (grpc.StatusCode.INVALID_ARGUMENT, f"user_id: {ID_RULE}")
        similar = served.stub.SimilarItems(
            recommender_pb2.SimilarItemsRequest(item_id=bad), timeout=5)
        assert await _code(similar) == (grpc.StatusCode.INVALID_ARGUMENT, f"item_id: {ID_RULE}")


async def test_bad_similar_items_requests(served: Served) -> None:
    await _serving_version(served, "1")
    similar = recommender_pb2.SimilarItemsRequest
    code, message = await _code(served.stub.SimilarItems(similar(item_id=""), timeout=5))
    assert (code, message.split(":")[0]) == (grpc.StatusCode.INVALID_ARGUMENT, "item_id")
    code, message = await _code(served.stub.SimilarItems(similar(item_id="i1", k=51), timeout=5))
    assert (code, message.split(":")[0]) == (grpc.StatusCode.INVALID_ARGUMENT, "k")
    code, message = await _code(served.stub.SimilarItems(similar(item_id="nope"), timeout=5))
    assert code == grpc.StatusCode.NOT_FOUND
    assert "'nope'" in message


async def test_recommend_defaults_to_ten_items_and_names_version_and_strategy(
        served: Served) -> None:
    await _serving_version(served, "1")
    reply = await served.stub.Recommend(Request(user_id="u1"), timeout=5)
    assert len(reply.items) == 10
    assert reply.model_version == "1"
    assert reply.strategy == recommender_pb2.STRATEGY_PERSONALIZED
    stranger = await served.stub.Recommend(Request(user_id="stranger", k=3), timeout=5)
    assert stranger.strategy == recommender_pb2.STRATEGY_POPULARITY
    assert len(stranger.items) == 3


async def test_without_redis_answers_are_served_and_counted_as_cache_errors(
        served: Served) -> None:
    await _serving_version(served, "1")
    for _ in range(3):
        await served.stub.Recommend(Request(user_id="u1"), timeout=5)
    assert served.sample("recsys_recommender_cache_requests_total",
                         result="error", tier="redis") == 3
    assert served.sample("recsys_recommender_redis_errors_total", operation="lookup") >= 1


async def test_model_info(served: Served) -> None:
    await _serving_version(served, "1")
    info = await served.stub.GetModelInfo(recommender_pb2.GetModelInfoRequest(), timeout=5)
    assert (info.model_version, info.model_name, info.alias) == ("1", "recsys-mf", "champion")
    assert (info.user_count, info.item_count, info.factors) == (60, 120, 8)
    assert info.metrics.ndcg_at_10 == 0.5
    assert info.metrics.users_evaluated == 40
    assert dict(info.lineage.partition_offsets) == {0: 400, 1: 200}
    assert info.loaded_at.seconds > 0
    assert (info.scoring.approximate, info.scoring.recall_at_10, info.scoring.scanned_ratio,
            info.scoring.top_lists) == (False, 1.0, 1.0, True)


async def test_a_moved_alias_is_swapped_in(served: Served) -> None:
    await _serving_version(served, "1")
    await _serving_version(served, "2")
    reply = await served.stub.Recommend(Request(user_id="u1"), timeout=5)
    assert reply.model_version == "2"
    assert served.sample("recsys_recommender_model_swaps_total") == 2
    assert served.sample("recsys_recommender_model_info", name="recsys-mf", version="2",
                         run_id="run-2") == 1


async def test_mlflow_failures_are_counted_while_the_model_keeps_serving(
        served: Served) -> None:
    await _serving_version(served, "1")
    served.source.fail = True
    for _ in range(100):
        if served.sample("recsys_recommender_model_load_failures_total") >= 2:
            break
        await asyncio.sleep(0.025)
    assert served.sample("recsys_recommender_model_load_failures_total") >= 2
    reply = await served.stub.Recommend(Request(user_id="u1"), timeout=5)
    assert reply.model_version == "1"
    assert await _health(served) == health_pb2.HealthCheckResponse.SERVING
