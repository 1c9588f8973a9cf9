"""RecommenderService over gRPC: validate, call the core, convert back."""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from recsys.recommender.v1 import recommender_pb2, recommender_pb2_grpc
from services.core.contract import categories_problem, id_problem
from services.core.errors import InvalidArgument
from services.model.messages import lineage_to_proto, metrics_to_proto
from services.recommender.engine import Recommender

SERVICE_NAME = recommender_pb2.DESCRIPTOR.services_by_name["RecommenderService"].full_name
DEFAULT_K = 10
MAX_EXCLUDED = 1000


class RecommenderServicer(recommender_pb2_grpc.RecommenderServiceServicer):
    def __init__(self, recommender: Recommender, *, max_k: int) -> None:
        self._recommender = recommender
        self._max_k = max_k

    async def Recommend(
        self, request: recommender_pb2.RecommendRequest, context: grpc.aio.ServicerContext
    ) -> recommender_pb2.RecommendResponse:
        if len(request.exclude_item_ids) > MAX_EXCLUDED:
            raise InvalidArgument("exclude_item_ids", f"at most {MAX_EXCLUDED} items, got "
                                                      f"{len(request.exclude_item_ids)}")
        answer = await self._recommender.recommend(
            _id("user_id", request.user_id), k=self._k(request.k),
            exclude_seen=request.exclude_seen if request.HasField("exclude_seen") else True,
            exclude_item_ids=request.exclude_item_ids,
            categories=_categories(request.categories),
        )
        return answer.proto

    async def SimilarItems(
        self, request: recommender_pb2.SimilarItemsRequest, context: grpc.aio.ServicerContext
    ) -> recommender_pb2.SimilarItemsResponse:
        similar = await self._recommender.similar(_id("item_id", request.item_id),
                                                  k=self._k(request.k),
                                                  categories=_categories(request.categories))
        return similar.proto

    async def GetModelInfo(
        self, request: recommender_pb2.GetModelInfoRequest, context: grpc.aio.ServicerContext
    ) -> recommender_pb2.GetModelInfoResponse:
        model = self._recommender.model()
        catalog = self._recommender.catalog(model)
        loaded_at = Timestamp()
        loaded_at.FromDatetime(model.loaded_at)
        return recommender_pb2.GetModelInfoResponse(
            model_version=model.version, model_name=model.model_name, alias=model.alias,
            loaded_at=loaded_at, metrics=metrics_to_proto(model.metrics),
            lineage=lineage_to_proto(model.lineage), user_count=model.user_count,
            item_count=model.item_count, factors=model.factors,
            scoring=recommender_pb2.Scoring(
                approximate=model.scorer.index is not None, recall_at_10=model.scorer.recall,
                scanned_ratio=model.scorer.scanned, top_lists=model.scorer.top_lists is not None),
            catalog=recommender_pb2.CatalogSummary(
                items=catalog.items, blocked_items=catalog.blocked_items,
                cold_start_items=len(catalog.cold_ids), users=len(catalog.users),
                version=catalog.version),
        )

    def _k(self, k: int) -> int:
        if not 0 <= k <= self._max_k:
            raise InvalidArgument("k", f"must be 1 to {self._max_k} (0 means {DEFAULT_K}), "
                                       f"got {k}")
        return k or min(DEFAULT_K, self._max_k)


def _id(field: str, value: str) -> str:
    problem = id_problem(value)
    if problem is not None:
        raise InvalidArgument(field, problem)
    return value


def _categories(values: Sequence[str]) -> Sequence[str]:
    problem = categories_problem(values)
    if problem is not None:
        raise InvalidArgument("categories", problem)
    return values
