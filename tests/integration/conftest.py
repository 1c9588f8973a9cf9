"""Servers and data that tests of more than one package use: an ingest server, a topic of
synthetic events that went through IngestService, trainers that consumed it, recommender
replicas, and a Redis and an MLflow of a test's own."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest

from scripts.localstack.components import MlflowServer, RedisServer, TansuBroker
from services.recommender.settings import RecommenderSettings
from tests.support.ingest_server import Ingest, start_ingest
from tests.support.recommender_replica import Replica, ReplicaFactory, running_replica
from tests.support.trainer_server import (
    TRAINER_EVENTS,
    Ingested,
    Trainer,
    TrainerData,
    ingest_synthetic,
    trainer_on_topic,
)


@pytest.fixture
async def ingest(kafka: TansuBroker) -> AsyncIterator[Ingest]:
    """An ingest server on the shared memory broker, with a topic of its own."""
    running = await start_ingest(kafka.bootstrap)
    yield running
    await running.stop()


@pytest.fixture(scope="session")
def synthetic_topic(kafka: TansuBroker) -> Ingested:
    """TRAINER_EVENTS streamed through a real IngestService, read back from the topic."""
    return ingest_synthetic(kafka.bootstrap, TRAINER_EVENTS)


@pytest.fixture(scope="session")
def trainer_data(tmp_path_factory: pytest.TempPathFactory) -> TrainerData:
    return TrainerData(tmp_path_factory.mktemp("trainer"), f"trainer-{uuid.uuid4().hex[:8]}")


@pytest.fixture
async def trainer(kafka: TansuBroker, mlflow_server: MlflowServer, synthetic_topic: Ingested,
                  trainer_data: TrainerData) -> AsyncIterator[Trainer]:
    """A trainer whose store holds the whole synthetic topic, with a registered model and an
    experiment of its own: no version, champion or job metric from another test. The store
    is the session's (the first trainer consumes the topic, the next ones find it read)."""
    async with trainer_on_topic(kafka, mlflow_server, synthetic_topic, trainer_data) as started:
        yield started


@pytest.fixture
def servers(mlflow_server: MlflowServer, redis_server: RedisServer) -> dict[str, str]:
    """Replica settings for the session's MLflow and Redis."""
    return {"mlflow_tracking_uri": mlflow_server.tracking_uri, "redis_url": redis_server.url}


@pytest.fixture
def model_name() -> str:
    """A registered model of the test's own: no version or champion of another test."""
    return f"recsys-test-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def replica(model_name: str) -> ReplicaFactory:
    """`async with replica(mlflow_tracking_uri=..., redis_url=..., ...) as r`: a replica of
    the test's model, polling its champion every 0.2 s, without a history consumer unless
    told."""

    def start(**settings: object) -> AbstractAsyncContextManager[Replica]:
        values: dict[str, object] = {"model_name": model_name, "poll_interval_s": 0.2,
                                     "history_consumer": False, "catalog_consumer": False}
        return running_replica(RecommenderSettings(**{**values, **settings}))  # type: ignore[arg-type]

    return start


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of this test's own: the test may stop it, and no other test sees its keys."""
    with RedisServer(tmp_path / "redis") as server:
        yield server


@pytest.fixture
def own_mlflow(tmp_path: Path) -> Iterator[MlflowServer]:
    """An MLflow of this test's own: the test may stop it."""
    server = MlflowServer(tmp_path / "mlflow")
    try:
        yield server.start().wait_ready(90)  # a fresh database takes a while
    finally:
        server.stop()
