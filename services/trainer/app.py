"""The trainer's App: the dataset store, its Kafka consumer, the job manager and MLflow."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Sequence
from pathlib import Path

from prometheus_client import CollectorRegistry

from recsys.events.v1.catalog_pb2 import CatalogChange
from recsys.events.v1.interaction_pb2 import Interaction
from recsys.trainer.v1 import trainer_pb2_grpc
from services.core.consumer import ConsumerLoop
from services.core.errors import FailedPrecondition, Unavailable
from services.core.health import HealthReporter
from services.core.kafka import read_end_offsets
from services.core.server import ServiceBinding
from services.core.settings import SettingsError
from services.trainer.catalog_follower import CatalogFollower, catalog_loop
from services.trainer.consumer import dataset_consumer
from services.trainer.dataset import DatasetStore
from services.trainer.distributed import DistributedFits, Launcher
from services.trainer.jobs import JobManager
from services.trainer.kubernetes_workers import KubernetesApi, KubernetesLauncher
from services.trainer.local_workers import LocalLauncher
from services.trainer.metrics import TrainerMetrics
from services.trainer.registry import MlflowRegistry, configure_mlflow_client
from services.trainer.servicer import SERVICE_NAME, TrainerServicer
from services.trainer.settings import TrainerSettings
from services.trainer.training import TrainingOptions


class TrainerApp:
    """SERVING once the store is open: Kafka and MLflow outages show in jobs and metrics."""

    def __init__(self, settings: TrainerSettings, registry: CollectorRegistry) -> None:
        self._settings = settings
        self._metrics = TrainerMetrics.create(registry)
        # Process-wide on purpose: MLflow's client takes its timeout, retries and telemetry
        # switch only from the environment, and the trainer is the one MLflow user here.
        configure_mlflow_client(timeout_s=settings.mlflow_timeout_s,
                                retries=settings.mlflow_retries,
                                credentials=settings.mlflow_credentials())
        self._mlflow = MlflowRegistry(
            tracking_uri=settings.mlflow_tracking_uri, model_name=settings.model_name,
            experiment=settings.mlflow_experiment,
        )
        self.store: DatasetStore | None = None
        self._jobs: JobManager | None = None
        self._consumer: ConsumerLoop[Interaction] | None = None
        self._catalog: ConsumerLoop[CatalogChange] | None = None
        self._triggers: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def bindings(self) -> Sequence[ServiceBinding]:
        servicer = TrainerServicer(self.jobs, self._mlflow)
        return [ServiceBinding(SERVICE_NAME, lambda server: trainer_pb2_grpc
                               .add_TrainerServiceServicer_to_server(servicer, server))]

    def jobs(self) -> JobManager:
        if self._jobs is None:
            raise Unavailable("the trainer is starting: its dataset store is not open yet")
        return self._jobs

    async def start(self, health: HealthReporter) -> None:
        settings = self._settings
        store = await asyncio.to_thread(DatasetStore, settings.store_path)
        self.store = store
        follower = CatalogFollower(store, topic=settings.kafka_topic,
                                   catalog_topic=settings.catalog_topic, metrics=self._metrics)
        self._metrics.dataset_rows.set(store.row_count)
        snapshots = settings.object_store()
        jobs = JobManager(
            store, self._mlflow, self._metrics, defaults=settings.train_config(),
            options=TrainingOptions(
                topic=settings.kafka_topic, type_weights=settings.type_weights,
                min_ndcg=settings.min_ndcg, gate_tolerance=settings.gate_tolerance,
                search=settings.search_defaults(),
                evaluation_max_rows=settings.evaluation_max_rows,
                evaluation_max_users=settings.evaluation_max_users,
                top_lists_max_cells=settings.top_lists_max_cells,
                wait_for_events_s=settings.wait_for_events_s,
                end_offsets=functools.partial(
                    read_end_offsets, settings.kafka_bootstrap, settings.kafka_topic,
                    security=settings.kafka_security()),
                catalog_topic=settings.catalog_topic,
                snapshots=snapshots,
                distributed=(DistributedFits(snapshots, _launcher(settings))
                             if snapshots is not None else None),
                workers=settings.workers, max_workers=settings.max_workers,
            ),
        )
        await jobs.open()
        self._jobs = jobs
        self._consumer = dataset_consumer(store, self._metrics, settings)
        self._consumer.start()
        self._catalog = catalog_loop(follower, settings)
        self._catalog.start()
        if settings.trigger_new_events or settings.trigger_interval_min:
            self._triggers = asyncio.get_running_loop().create_task(jobs.run_triggers(
                new_events=settings.trigger_new_events,
                interval_min=settings.trigger_interval_min,
            ))
        await health.set_serving(SERVICE_NAME, True)

    async def drain(self) -> None:
        """Stop the triggers and cancel the running job: it ends CANCELLED at its next epoch
        (or before it registers a model), its watchers see that end, and no alias moves."""
        if self._triggers is not None:
            self._triggers.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._triggers
            self._triggers = None
        running = self._jobs.running if self._jobs is not None else None
        if running is not None:
            with contextlib.suppress(FailedPrecondition):  # it ended meanwhile
                await self.jobs().cancel(running.job_id)

    async def close(self) -> None:
        """Stop triggers, cancel the running job, stop the consumer, close the store."""
        if self._closed:
            return
        self._closed = True
        await self.drain()
        if self._jobs is not None:
            await self._jobs.close()
        if self._consumer is not None:
            await asyncio.to_thread(self._consumer.stop)
        if self._catalog is not None:
            await asyncio.to_thread(self._catalog.stop)
        if self.store is not None:
            self.store.close()


def _launcher(settings: TrainerSettings) -> Launcher:
    """How this trainer starts the workers of a distributed fit (RECSYS_TRAINER_LAUNCHER)."""
    if settings.launcher == "kubernetes":
        try:
            api = KubernetesApi.in_cluster()
        except OSError as exc:
            raise SettingsError(f"RECSYS_TRAINER_LAUNCHER=kubernetes needs the service "
                                f"account's projected token: {exc}") from None
        return KubernetesLauncher(api, environ=settings.object_store_env(keys=False))
    return LocalLauncher(environ=settings.object_store_env(),
                         work_dir=Path(settings.data_dir) / "workers")
