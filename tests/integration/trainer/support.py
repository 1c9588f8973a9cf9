"""Helpers for the trainer integration tests: trainers in this process or as a process."""

from __future__ import annotations

import sqlite3
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry

from recsys.trainer.v1 import trainer_pb2_grpc
from scripts.localstack.components import Component, MlflowServer, TansuBroker, free_ports
from services.core import server
from services.core.client import aio_channel, channel
from services.trainer.app import TrainerApp
from services.trainer.servicer import SERVICE_NAME
from services.trainer.settings import TrainerSettings

ML100K_EVENTS = 100_000


@dataclass(frozen=True)
class Ingested:
    """The topic holding ml-100k, and what is on it, read back independently."""

    topic: str
    event_ids: frozenset[str]
    highwater: dict[int, int]


def trainer_settings(kafka: TansuBroker, mlflow: MlflowServer, topic: str, data_dir: Path,
                     **overrides: object) -> TrainerSettings:
    """Settings of a trainer with its own consumer group, registered model and experiment."""
    suffix = uuid.uuid4().hex[:8]
    values: dict[str, object] = {
        "kafka_bootstrap": kafka.bootstrap, "kafka_topic": topic,
        "mlflow_tracking_uri": mlflow.tracking_uri, "model_name": f"recsys-mf-{suffix}",
        "mlflow_experiment": f"trainer-tests-{suffix}", "consumer_group": f"trainer-{suffix}",
        "data_dir": str(data_dir), **overrides,
    }
    return TrainerSettings(**values)  # type: ignore[arg-type]


def store_rows(data_dir: Path) -> int:
    """Events in a trainer's store, read the way any other process could."""
    path = Path(data_dir) / "trainer.sqlite3"
    if not path.exists():
        return 0
    db = sqlite3.connect(path, timeout=10)
    try:
        return int(db.execute("SELECT count(*) FROM events").fetchone()[0])
    except sqlite3.OperationalError:  # the schema is not created yet
        return 0
    finally:
        db.close()


def wait_for(condition: Callable[[], bool], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} not within {timeout} s"
        time.sleep(0.05)


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


class TrainerProcess(Component):
    """`python -m services.trainer` as its own process, for kill -9 tests."""

    name = "trainer"

    def __init__(self, data_dir: Path, *, environ: dict[str, str]) -> None:
        super().__init__(data_dir)
        self.port, self.metrics_port = free_ports(2)
        self.environ = environ

    @property
    def store_dir(self) -> Path:
        return self.data_dir / "store"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "services.trainer"]

    def env(self) -> dict[str, str]:
        return {
            **self.environ,
            "RECSYS_GRPC_PORT": str(self.port),
            "RECSYS_METRICS_PORT": str(self.metrics_port),
            "RECSYS_TRAINER_DATA_DIR": str(self.store_dir),
            "RECSYS_LOG_FORMAT": "json",
        }

    def probe(self) -> bool:
        with channel(f"127.0.0.1:{self.port}") as chan:
            answer = health_pb2_grpc.HealthStub(chan).Check(
                health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=1)
        return answer.status == health_pb2.HealthCheckResponse.SERVING
