"""The recommender's App: model poller, Redis cache tiers, history consumer, catalogue
follower, servicer.

Threads: the model poller (MLflow calls, download, load), the history consumer (Kafka to
Redis), the catalogue follower (the catalogue topic from its start, into `CatalogKeeper`) and a
small pool that scores large catalogues; everything else runs on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import torch
from prometheus_client import CollectorRegistry
from threadpoolctl import threadpool_limits

from recsys.events.v1.catalog_pb2 import CatalogChange
from recsys.events.v1.interaction_pb2 import Interaction
from recsys.recommender.v1 import recommender_pb2_grpc
from services.core.consumer import Backoff, Batch, ConsumerLoop, Subscription
from services.core.health import HealthReporter
from services.core.server import ServiceBinding
from services.model.champion import ChampionReader, mlflow_session
from services.recommender.cache import CircuitBreaker, RedisCache, connect
from services.recommender.catalog_keeper import POLL_TIMEOUT_MS, CatalogKeeper
from services.recommender.engine import Recommendation, Recommender
from services.recommender.erasure import RedisEraser
from services.recommender.history import HistoryWriter, history_consumer
from services.recommender.local_cache import LocalAnswers, follow_invalidations
from services.recommender.metrics import RecommenderMetrics
from services.recommender.model_store import ChampionSource, LoadedModel, ModelStore
from services.recommender.scoring import Scorer
from services.recommender.servicer import SERVICE_NAME, RecommenderServicer
from services.recommender.settings import RecommenderSettings


class RecommenderApp:
    """NOT_SERVING until the first model is loaded; Redis, Kafka and MLflow outages after that
    degrade answers (no cache, no fresh history, no new versions) but never health."""

    def __init__(self, settings: RecommenderSettings, registry: CollectorRegistry, *,
                 source: ChampionSource | None = None) -> None:
        self._settings = settings
        self._metrics = RecommenderMetrics.create(registry)
        self._store = ModelStore(
            source or ChampionReader(
                tracking_uri=settings.mlflow_tracking_uri, model_name=settings.model_name,
                timeout_s=settings.mlflow_timeout_s,
                session=mlflow_session(retries=settings.mlflow_retries,
                                       auth=settings.mlflow_credentials())),
            model_name=settings.model_name, poll_interval_s=settings.poll_interval_s,
            metrics=self._metrics, on_swap=self._swapped,
            build_scorer=functools.partial(
                Scorer, index_min_items=settings.index_min_items,
                target_recall=settings.index_target_recall,
                top_lists_max_cells=settings.top_lists_max_cells,
                top_lists_max_users=settings.top_lists_max_users),
        )
        self._local: LocalAnswers[Recommendation] = LocalAnswers(
            settings.local_cache_size, settings.cache_ttl_s)
        self._histories: LocalAnswers[tuple[str, ...]] = LocalAnswers(
            settings.local_cache_size, settings.cache_ttl_s)
        self._cache = RedisCache(
            connect(settings.redis_connection_url, timeout_s=settings.redis_timeout_s,
                    connect_timeout_s=settings.redis_timeout_s),
            ttl_s=settings.cache_ttl_s, history_size=settings.history_size,
            breaker=CircuitBreaker(settings.redis_cooldown_s), metrics=self._metrics,
        )
        self._executor = ThreadPoolExecutor(settings.scoring_threads,
                                            thread_name_prefix="recommender-scoring")
        self.catalog = CatalogKeeper()
        self._metrics.catalog_items.set_function(lambda: self._catalog_figure("items"))
        self._metrics.catalog_blocked.set_function(lambda: self._catalog_figure("blocked"))
        self._metrics.catalog_cold_start.set_function(lambda: self._catalog_figure("cold"))
        self._catalog_follower: ConsumerLoop[CatalogChange] | None = None
        self._eraser: RedisEraser | None = None
        if settings.catalog_consumer:
            self._eraser = RedisEraser.connect(settings.redis_connection_url)
            self._catalog_follower = ConsumerLoop(
                Subscription(bootstrap=settings.kafka_bootstrap, topic=settings.catalog_topic,
                             group_id=None, name="recommender-catalog",
                             security=settings.kafka_security(),
                             poll_timeout_ms=POLL_TIMEOUT_MS, fetch_max_wait_ms=POLL_TIMEOUT_MS),
                self._catalog_batch, message=CatalogChange,
                on_error=lambda _: self._metrics.catalog_errors.inc(),
                backoff=Backoff(longest_s=5.0))
        self.recommender = Recommender(
            self._store, catalog=self.catalog, cache=self._cache, local=self._local,
            histories=self._histories,
            metrics=self._metrics,
            executor=self._executor, offload_min_items=settings.offload_min_items,
        )
        self._history_writer: HistoryWriter | None = None
        self._history: ConsumerLoop[Interaction] | None = None
        if settings.history_consumer:
            self._history_writer = HistoryWriter.connect(
                settings.redis_connection_url, history_size=settings.history_size,
                ttl_s=settings.history_ttl_s)
            self._history = history_consumer(self._history_writer, self._metrics, settings,
                                             erased=self.catalog.erased)
        self._invalidations: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._health: HealthReporter | None = None
        self._closed = False

    def _catalog_figure(self, which: str) -> float:
        """A gauge's value from the last catalogue state published (0 before the first)."""
        state = self.catalog.published
        if state is None:
            return 0.0
        return float({"items": state.items, "blocked": state.blocked_items,
                      "cold": len(state.cold_ids)}[which])

    def _catalog_batch(self, batch: Batch[CatalogChange]) -> None:
        """The catalogue follower's handler: fold the batch in; once it follows the topic live,
        erase from Redis the users whose erasure arrived (services.recommender.erasure)."""
        erased = self.catalog.apply(batch)
        live = self._catalog_follower is not None and self._catalog_follower.caught_up
        if erased and live and self._eraser is not None:
            self._eraser.erase(erased)
            self._metrics.erasures.inc(len(erased))

    @property
    def bindings(self) -> Sequence[ServiceBinding]:
        servicer = RecommenderServicer(self.recommender, max_k=self._settings.max_k)
        return [ServiceBinding(SERVICE_NAME, lambda server: recommender_pb2_grpc
                               .add_RecommenderServiceServicer_to_server(servicer, server))]

    async def start(self, health: HealthReporter) -> None:
        torch.set_num_threads(self._settings.torch_threads)
        # numpy's BLAS too: its default (a thread per core) spins against the other requests
        # on a busy machine (5,000 x 128 factors times one user: 4.6 ms instead of 0.06 ms).
        threadpool_limits(self._settings.torch_threads, user_api="blas")
        self._loop = asyncio.get_running_loop()
        self._health = health
        if self._settings.local_cache_size:
            self._invalidations = self._loop.create_task(follow_invalidations(
                self._settings.redis_connection_url, (self._local, self._histories),
                retry_s=self._settings.redis_cooldown_s, metrics=self._metrics))
        self._store.start()
        if self._history is not None:
            self._history.start()
        if self._catalog_follower is not None:
            self._catalog_follower.start()

    async def drain(self) -> None:
        """Nothing to end early: every call is a quick unary one, left to finish."""

    def _swapped(self, model: LoadedModel) -> None:
        """On the poller thread, after a swap: report SERVING, drop the old version's answers."""
        if self._loop is not None and not self._closed:
            asyncio.run_coroutine_threadsafe(self._serving(), self._loop)

    async def _serving(self) -> None:
        self._local.clear()
        # Everything alive now (imports, the model's id maps) lives as long as the process or
        # the model: keep it out of the cyclic collector's full passes, which otherwise stall
        # requests for hundreds of milliseconds scanning it (measured: 670 ms, p99 x4).
        gc.freeze()
        # Until the catalogue topic is read to its end, hidden items are not known yet.
        if self._catalog_follower is not None:
            await asyncio.to_thread(self._catalog_follower.wait_caught_up)
        if self._health is not None:
            await self._health.set_serving(SERVICE_NAME, True)

    async def close(self) -> None:
        """Stop the threads and the invalidation task, flush cache writes, close Redis."""
        if self._closed:
            return
        self._closed = True
        await asyncio.to_thread(self._store.stop)
        if self._history is not None:
            await asyncio.to_thread(self._history.stop)
        if self._history_writer is not None:
            self._history_writer.close()
        if self._catalog_follower is not None:
            await asyncio.to_thread(self._catalog_follower.stop)
        if self._eraser is not None:
            self._eraser.close()
        if self._invalidations is not None:
            self._invalidations.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._invalidations
        await self._cache.close()
        self._executor.shutdown(wait=False, cancel_futures=True)
