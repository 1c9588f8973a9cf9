"""The recommender's core: the served model, the cache tiers and recent history, no gRPC.

A Recommend request reads the model reference once, then tries the in-process tier of answers.
A known user whose answer is cheap to compute (`Scorer.direct`: their top list, or an exact
product over a category filter's few items) needs only their recent history: computing it costs
what fetching a cached answer would, so such answers are never written to Redis, and the history
comes from the in-process tier of histories (coherent like the answers) when it holds the user,
so that request makes no Redis call at all. Everything else, and a
history the process does not hold, takes one Redis round trip that returns either the cached
answer or the user's generation and history; what is then scored is written back, since
scoring (fold-in, the item index, the exact product) costs more than fetching.

Misses are scored in batches (`Batcher`): what arrives while a batch is being scored goes in
the next one, which shares one matrix product and one top-k. Small catalogues (and large
ones searched through an item index) are scored on the event loop, where a batch takes tens
of microseconds and a thread hop would cost more; queries that score `offload_min_items` rows
or more on a worker thread, so that the event loop (cache hits, Redis, gRPC) keeps running
meanwhile.
"""
from __future__ import annotations

import asyncio
import functools
import itertools
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Protocol, TypeVar

from recsys.recommender.v1 import recommender_pb2
from services.core.errors import FailedPrecondition
from services.recommender.batching import Batcher
from services.recommender.cache import RedisCache, request_key
from services.recommender.catalog_keeper import CatalogKeeper
from services.recommender.catalog_state import CatalogState, categories_tag
from services.recommender.local_cache import LocalAnswers
from services.recommender.metrics import RecommenderMetrics
from services.recommender.model_store import LoadedModel
from services.recommender.scoring import ItemFilter, Query, Ranked, Scorer, Strategy

T = TypeVar("T")

# Queries scored together at most: the batch's scores take 4 bytes x catalogue size each.
_MAX_SCORING_BATCH = 64
# The request part of a user's entry in the in-process tier of histories.
_HISTORY = "history"

_STRATEGY_TO_PROTO = {
    Strategy.PERSONALIZED: recommender_pb2.STRATEGY_PERSONALIZED,
    Strategy.FOLD_IN: recommender_pb2.STRATEGY_FOLD_IN,
    Strategy.POPULARITY: recommender_pb2.STRATEGY_POPULARITY,
    Strategy.LABEL_POPULARITY: recommender_pb2.STRATEGY_LABEL_POPULARITY,
}
_STRATEGY_FROM_PROTO = {v: k for k, v in _STRATEGY_TO_PROTO.items()}


@dataclass(frozen=True, eq=False)
class Recommendation:
    """An answer as served: an answer from the in-process tier sends its `proto` again as is
    (never mutate it)."""

    proto: recommender_pb2.RecommendResponse
    strategy: Strategy
    cold_start: bool  # some of its items are unknown to the model (catalogue)

    @classmethod
    def from_proto(cls, message: recommender_pb2.RecommendResponse) -> Recommendation:
        return cls(message, _STRATEGY_FROM_PROTO[message.strategy],
                   any(item.cold_start for item in message.items))


@dataclass(frozen=True)
class Similar:
    model_version: str
    items: Ranked
    cold_start: frozenset[str] = frozenset()  # items the model does not know (catalogue)
    anchor_cold_start: bool = False  # the requested item is one of them

    @property
    def proto(self) -> recommender_pb2.SimilarItemsResponse:
        response = recommender_pb2.SimilarItemsResponse(
            model_version=self.model_version, cold_start=self.anchor_cold_start)
        add = response.items.add  # in place: half the cost of building ScoredItems to pass in
        for item_id, score in self.items:
            add(item_id=item_id, score=score, cold_start=item_id in self.cold_start)
        return response


class ModelSource(Protocol):
    @property
    def current(self) -> LoadedModel | None: ...


class Recommender:
    """Answers Recommend and SimilarItems with the model `models` serves at call time."""

    def __init__(self, models: ModelSource, *, catalog: CatalogKeeper, cache: RedisCache,
                 local: LocalAnswers[Recommendation], histories: LocalAnswers[tuple[str, ...]],
                 metrics: RecommenderMetrics, executor: Executor, offload_min_items: int
                 ) -> None:
        """`local` holds answers and `histories` users' recent item ids (by `_HISTORY`), both
        kept coherent by the same invalidations."""
        self._models = models
        self._catalog = catalog
        self._cache = cache
        self._local = local
        self._histories = histories
        self._executor = executor
        self._offload_min_items = offload_min_items
        # Bound once: `labels()` costs microseconds on every request otherwise.
        self._outcomes = {(result, tier): metrics.cache_requests.labels(result, tier)
                          for result, tier in (("hit", "local"), ("hit", "redis"),
                                               ("miss", "local"), ("miss", "redis"),
                                               ("error", "redis"))}
        self._strategies = {s: metrics.strategy.labels(s.value) for s in Strategy}
        self._filtered = {rpc: metrics.filtered.labels(rpc) for rpc in ("recommend", "similar")}
        self._cold_start_answers = metrics.cold_start_answers
        self._scoring_seconds = {rpc: metrics.scoring_seconds.labels(rpc)
                                 for rpc in ("recommend", "similar")}
        self._queries: Batcher[tuple[Scorer, Query], tuple[Strategy, Ranked]] = Batcher(
            self._score_queries, max_batch=_MAX_SCORING_BATCH)

    def model(self) -> LoadedModel:
        """The model serving now; FailedPrecondition until the first one is loaded."""
        model = self._models.current
        if model is None:
            raise FailedPrecondition("no model loaded yet")
        return model

    def catalog(self, model: LoadedModel) -> CatalogState:
        """The catalogue as it stands for `model`."""
        return self._catalog.state(model)

    async def recommend(self, user_id: str, *, k: int, exclude_seen: bool,
                        exclude_item_ids: Sequence[str],
                        categories: Sequence[str] = ()) -> Recommendation:
        model = self.model()
        catalog = self._catalog.state(model)
        if categories:
            self._filtered["recommend"].inc()
        # The catalogue's version in the key: an answer cached before a hide is never served
        # after it (README: The catalogue).
        request = request_key(f"{model.cache_tag}|{catalog.version}", k, int(exclude_seen),
                              categories_tag(categories), exclude=exclude_item_ids)
        answer = self._local.get(user_id, request)
        if answer is not None:
            return self._served(answer, "hit", "local")
        epoch, history_epoch = self._local.epoch(), self._histories.epoch()
        items = catalog.items_for(categories)
        query = functools.partial(  # with the user's recent items, once known
            Query, user_id, k, exclude_seen, exclude_item_ids, items=items,
            anonymous=user_id in catalog.forgotten, popularity=catalog.popularity_for(user_id))
        history = self._histories.get(user_id, _HISTORY)
        direct = None if history is None else model.scorer.direct(query(history))
        if direct is not None:  # no Redis call: the history was in process
            return self._direct(user_id, request, self._answer(model, direct, items),
                                epoch=epoch, tier="local")
        lookup = await self._cache.lookup(user_id, request)
        if lookup is not None and lookup.payload is not None:
            answer = Recommendation.from_proto(
                recommender_pb2.RecommendResponse.FromString(lookup.payload))
            self._local.put(user_id, request, answer, epoch=epoch)
            return self._served(answer, "hit", "redis")
        if lookup is None:  # Redis is out: served without the cache, with what history we hold
            result = await self._queries.submit((model.scorer, query(history or ())))
            return self._served(self._answer(model, result, items), "error", "redis")
        self._histories.put(user_id, _HISTORY, lookup.history, epoch=history_epoch)
        known = query(lookup.history)
        direct = model.scorer.direct(known)
        if direct is not None:  # as cheap to compute again as to fetch: not written to Redis
            return self._direct(user_id, request, self._answer(model, direct, items),
                                epoch=epoch, tier="redis")
        answer = self._answer(model, await self._queries.submit((model.scorer, known)), items)
        self._cache.store(user_id, request, lookup.generation, answer.proto.SerializeToString())
        self._local.put(user_id, request, answer, epoch=epoch)
        return self._served(answer, "miss", "redis")

    def _direct(self, user_id: str, request: str, answer: Recommendation, *, epoch: int,
                tier: str) -> Recommendation:
        """An answer computed directly: kept in the in-process tier only; `tier` says whether
        Redis was asked (for the history)."""
        self._local.put(user_id, request, answer, epoch=epoch)
        return self._served(answer, "miss", tier)

    async def similar(self, item_id: str, *, k: int, categories: Sequence[str] = ()) -> Similar:
        model = self.model()
        catalog = self._catalog.state(model)
        if categories:
            self._filtered["similar"].inc()
        scorer = model.scorer
        vector = None if scorer.knows_item(item_id) else catalog.cold_vector(item_id)
        items = await self._score(scorer, "similar", lambda: scorer.similar(
            item_id, k=k, items=catalog.items_for(categories), vector=vector))
        return Similar(model.version, items, _cold(scorer, items), vector is not None)

    @staticmethod
    def _answer(model: LoadedModel, result: tuple[Strategy, Ranked], items: ItemFilter
                ) -> Recommendation:
        """`result` as served; only the filter's extra items can be unknown to the model."""
        strategy, ranked = result
        cold = _cold(model.scorer, ranked) if items.extra_ids else frozenset()
        return Recommendation(model.responses.recommend(_STRATEGY_TO_PROTO[strategy], ranked,
                                                        cold), strategy, bool(cold))

    def _served(self, answer: Recommendation, result: str, tier: str) -> Recommendation:
        self._outcomes[result, tier].inc()
        self._strategies[answer.strategy].inc()
        if answer.cold_start:
            self._cold_start_answers.inc()
        return answer

    async def _score_queries(self, batch: list[tuple[Scorer, Query]]
                             ) -> list[tuple[Strategy, Ranked]]:
        def score() -> list[tuple[Strategy, Ranked]]:
            # One scorer per batch, unless a model swap happened while it was filling.
            return [result for scorer, group in itertools.groupby(batch, key=lambda q: q[0])
                    for result in scorer.recommend_many([query for _, query in group])]

        return await self._score(batch[0][0], "recommend", score, count=len(batch))

    async def _score(self, scorer: Scorer, rpc: str, score: Callable[[], T], *,
                     count: int = 1) -> T:
        """Run `score` on the event loop or, for a large catalogue, on a worker thread; each
        of the `count` requests it serves observes its duration."""
        histogram = self._scoring_seconds[rpc]

        def timed() -> T:
            start = time.perf_counter()
            try:
                return score()
            finally:
                elapsed = time.perf_counter() - start
                for _ in range(count):
                    histogram.observe(elapsed)

        if scorer.scored_per_query < self._offload_min_items:
            return timed()
        return await asyncio.get_running_loop().run_in_executor(self._executor, timed)


def _cold(scorer: Scorer, items: Ranked) -> frozenset[str]:
    """The items of an answer that `scorer`'s model does not know: cold-start ones."""
    return frozenset(item for item, _ in items if not scorer.knows_item(item))
