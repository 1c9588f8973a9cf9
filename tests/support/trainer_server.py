"""Trainers for integration tests, in this process or as a process, and what their stores hold
(read the way any other process could)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, closing
from dataclasses import dataclass
from pathlib import Path

import grpc
from prometheus_client import CollectorRegistry

from recsys.events.v1 import interaction_pb2
from recsys.trainer.v1 import trainer_pb2, trainer_pb2_grpc
from scripts.localstack.components import MlflowServer, TansuBroker
from services.cli.ingest import stream_events
from services.core import server
from services.core.client import aio_channel
from services.data.synthetic import SyntheticData, SyntheticSpec
from services.trainer.app import TrainerApp
from services.trainer.settings import TrainerSettings
from tests.support.ingest_server import start_ingest
from tests.support.polling import eventually_async
from tests.support.service_process import LoggedService
from tests.support.topics import read_topic

#: The trainers' data: generated, so no test needs a dataset from outside the repository.
#: Tests assert what holds whatever the generator's exact output: counts, exactly-once,
#: lineage, the quality gate's floor.
TRAINER_EVENTS = SyntheticSpec(users=600, items=400, events=30_000, seed=21)
#: Trials of the test trainers' searches: enough to see a search, few enough to be quick.
SEARCH_TRIALS = 4
#: A request that trains with the defaults (and what it pins) without a search: for jobs that
#: must reach their epochs fast, e.g. to be cancelled or killed while fitting.
NO_SEARCH = trainer_pb2.SearchBudget(trials=0)


@dataclass(frozen=True)
class Ingested:
    """A topic of events that went through IngestService, and what is on it, read back."""

    topic: str
    event_ids: frozenset[str]
    highwater: dict[int, int]  # per partition, the offset after its last record

    @property
    def events(self) -> int:
        return len(self.event_ids)


def ingest_synthetic(bootstrap: str, spec: SyntheticSpec) -> Ingested:
    """`spec`'s events streamed through a real IngestService (in this process, port 0) onto
    a topic of their own."""
    topic = f"trainer-synthetic-{uuid.uuid4().hex[:8]}"

    async def ingest() -> None:
        service = await start_ingest(bootstrap, topic)
        try:
            # A blocking client: in a thread, so this loop keeps serving the ingest server.
            summary = await asyncio.to_thread(stream_events, SyntheticData(spec).events(),
                                              target=service.target, timeout_s=300)
        finally:
            await service.stop()
        assert summary.error is None and summary.accepted == spec.events, summary

    asyncio.run(ingest())
    records = read_topic(bootstrap, topic)
    highwater: dict[int, int] = {}
    for record in records:
        highwater[record.partition] = max(highwater.get(record.partition, 0), record.offset + 1)
    event_ids = frozenset(interaction_pb2.Interaction.FromString(r.value).event_id
                          for r in records)
    assert len(records) == len(event_ids) == spec.events
    return Ingested(topic, event_ids, highwater)


@dataclass(frozen=True)
class TrainerData:
    """A dataset store's directory and the consumer group that feeds it: the group's committed
    offsets are the store's, so a trainer started on both reads only what is new."""

    directory: Path
    consumer_group: str


def trainer_settings(kafka: TansuBroker, mlflow: MlflowServer, topic: str, data_dir: Path,
                     **overrides: object) -> TrainerSettings:
    """Settings of a trainer with its own consumer group, registered model and experiment,
    whose jobs search hyper-parameters with a few trials."""
    suffix = uuid.uuid4().hex[:8]
    values: dict[str, object] = {
        "kafka_bootstrap": kafka.bootstrap, "kafka_topic": topic,
        "mlflow_tracking_uri": mlflow.tracking_uri, "model_name": f"recsys-mf-{suffix}",
        "mlflow_experiment": f"trainer-tests-{suffix}", "consumer_group": f"trainer-{suffix}",
        "data_dir": str(data_dir), "search_trials": SEARCH_TRIALS, **overrides,
    }
    return TrainerSettings(**values)  # type: ignore[arg-type]


def _query(data_dir: Path, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    path = Path(data_dir) / "trainer.sqlite3"
    if not path.exists():
        return []
    with closing(sqlite3.connect(path, timeout=10)) as db:
        try:
            return db.execute(sql, params).fetchall()
        except sqlite3.OperationalError:  # the schema is not created yet
            return []


def store_rows(data_dir: Path) -> int:
    """Events in a trainer's store."""
    rows = _query(data_dir, "SELECT count(*) FROM events")
    return int(rows[0][0]) if rows else 0  # type: ignore[call-overload]


def store_user_rows(data_dir: Path) -> dict[str, int]:
    """Events in a trainer's store, per user."""
    return {str(user): int(count) for user, count in _query(  # type: ignore[call-overload]
        data_dir, "SELECT user_id, count(*) FROM events GROUP BY user_id")}


def store_catalog(data_dir: Path) -> dict[str, object]:
    """A trainer store's catalogue: "item:<id>" -> (categories, labels, hidden) and
    "user:<id>" -> labels."""
    items = _query(data_dir, "SELECT item_id, categories, labels, hidden FROM catalog_items")
    users = _query(data_dir, "SELECT user_id, labels FROM catalog_users")
    return {**{f"item:{item}": (json.loads(categories), json.loads(labels), bool(hidden))  # type: ignore[arg-type]
               for item, categories, labels, hidden in items},
            **{f"user:{user}": json.loads(labels) for user, labels in users}}  # type: ignore[arg-type]


def store_event_ids(data_dir: Path) -> list[str]:
    return [str(row[0]) for row in _query(data_dir, "SELECT event_id FROM events")]


def store_offsets(data_dir: Path, topic: str) -> dict[int, int]:
    """Per partition of `topic`, the next offset the store says it read to (written with its
    rows, in the same transaction: once it reaches the topic's end, so have the rows). The
    store keeps the catalogue topic's offsets in the same table."""
    return {int(p): int(o)  # type: ignore[call-overload]
            for p, o in _query(data_dir, "SELECT kafka_partition, next_offset FROM offsets"
                                         " WHERE topic = ?", (topic,))}


def consumed(data_dir: Path, topic: Ingested) -> bool:
    """Whether the store has read `topic` to its end."""
    return store_offsets(data_dir, topic.topic) == topic.highwater


def copy_store(source: Path, target: Path) -> None:
    """A consistent copy of a live store (SQLite's online backup)."""
    with closing(sqlite3.connect(source)) as src, closing(sqlite3.connect(target)) as dst:
        src.backup(dst)


@dataclass
class Trainer:
    """An in-process trainer server and a channel to it."""

    running: server.RunningServer
    app: TrainerApp
    settings: TrainerSettings
    channel: grpc.aio.Channel

    @property
    def stub(self) -> trainer_pb2_grpc.TrainerServiceStub:
        return trainer_pb2_grpc.TrainerServiceStub(self.channel)


async def start_trainer(settings: TrainerSettings) -> Trainer:
    registry = CollectorRegistry()
    app = TrainerApp(settings, registry)
    running = await server.start(app, settings, registry)
    return Trainer(running, app, settings, aio_channel(f"127.0.0.1:{running.port}"))


async def stop_trainer(trainer: Trainer) -> None:
    await trainer.channel.close()
    await trainer.running.stop(2.0)


async def run_job(trainer: Trainer, hyperparameters: trainer_pb2.Hyperparameters | None = None,
                  *, search: trainer_pb2.SearchBudget | None = None
                  ) -> list[trainer_pb2.TrainingJob]:
    """Start a job and follow WatchTrainingJob to its end; every state seen."""
    started = await trainer.stub.StartTrainingJob(trainer_pb2.StartTrainingJobRequest(
        hyperparameters=hyperparameters, search=search), timeout=10)
    stream = trainer.stub.WatchTrainingJob(
        trainer_pb2.WatchTrainingJobRequest(job_id=started.job.job_id), timeout=300)
    return [update.job async for update in stream]


@asynccontextmanager
async def trainer_on_topic(kafka: TansuBroker, mlflow: MlflowServer, topic: Ingested,
                           data: TrainerData, **overrides: object) -> AsyncIterator[Trainer]:
    """A trainer on `data`'s store (its group's offsets), yielded once the store holds the
    whole `topic`: the first one consumes it, the next ones find it read."""
    started = await start_trainer(trainer_settings(
        kafka, mlflow, topic.topic, data.directory, consumer_group=data.consumer_group,
        **overrides))
    try:
        await eventually_async(lambda: consumed(data.directory, topic),
                               timeout=180, what=f"the topic {topic.topic} consumed")
        yield started
    finally:
        await stop_trainer(started)


class TrainerProcess(LoggedService):
    """`python -m services.trainer` as its own process, its store in `store_dir`."""

    def __init__(self, data_dir: Path, *, environ: dict[str, str]) -> None:
        super().__init__(data_dir, "trainer", environ=environ)

    @property
    def store_dir(self) -> Path:
        return self.data_dir / "store"

    def env(self) -> dict[str, str]:
        return {**super().env(), "RECSYS_TRAINER_DATA_DIR": str(self.store_dir)}
