"""The recommender in-process on port 0 against real MLflow, Redis and Tansu.

`publish` registers a model version the way the trainer does (trainer's MlflowRegistry: a run,
the `.npz` under `model/`, metrics and lineage as version tags, the champion alias).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from recsys.recommender.v1 import recommender_pb2, recommender_pb2_grpc
from scripts.localstack.components import MlflowServer, RedisServer
from services.core import server
from services.model.artifact import ModelArtifact
from services.model.lineage import Lineage
from services.recommender.app import RecommenderApp
from services.recommender.servicer import SERVICE_NAME
from services.recommender.settings import RecommenderSettings
from services.trainer.registry import MlflowRegistry

_jobs = itertools.count(1)


def publish(tracking_uri: str, model_name: str, artifact: ModelArtifact, workdir: Path, *,
            champion: bool = True) -> str:
    """Register `artifact` as a new version of `model_name` (champion unless told otherwise)."""
    job = f"job-{next(_jobs)}"
    path = workdir / job / "model.npz"
    path.parent.mkdir(parents=True)
    artifact.save(path)
    rows = len(artifact.seen_indices)
    lineage = Lineage(topic="interactions", row_count=rows, content_hash="cd" * 32,
                      partition_offsets={0: rows}, user_count=artifact.n_users,
                      item_count=artifact.n_items)
    registry = MlflowRegistry(tracking_uri=tracking_uri, model_name=model_name,
                              experiment="recommender-tests")
    run_id = registry.start_run(job_id=job, params={}, lineage=lineage, tags={})
    version = registry.register(run_id, metrics={"ndcg_at_10": 0.25, "users_evaluated": 60.0},
                                lineage=lineage, artifact=path, tags={})
    registry.end_run(run_id, "FINISHED")
    if champion:
        registry.set_champion(version.version)
    return version.version


@dataclass
class Replica:
    running: server.RunningServer
    app: RecommenderApp
    channel: grpc.aio.Channel
    stub: recommender_pb2_grpc.RecommenderServiceStub

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.running.port}"

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the samples `name` whose labels include `labels`, scraped from /metrics."""
        url = f"http://127.0.0.1:{self.running.metrics_port}/metrics"
        body = urllib.request.urlopen(url, timeout=5).read().decode()
        return sum(
            sample.value
            for family in text_string_to_metric_families(body)
            for sample in family.samples
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
        )

    async def serving(self) -> bool:
        """Whether health says RecommenderService is SERVING."""
        reply = await health_pb2_grpc.HealthStub(self.channel).Check(
            health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=5)
        return reply.status == health_pb2.HealthCheckResponse.SERVING

    async def recommend(self, user_id: str, **fields: object) -> recommender_pb2.RecommendResponse:
        request = recommender_pb2.RecommendRequest(user_id=user_id, **fields)  # type: ignore[arg-type]
        return await self.stub.Recommend(request, timeout=5)

    async def wait_for_version(self, version: str) -> None:
        """Until GetModelInfo names `version` (20 s at most)."""
        async with asyncio.timeout(20):
            while True:
                with contextlib.suppress(grpc.aio.AioRpcError):
                    info = await self.stub.GetModelInfo(recommender_pb2.GetModelInfoRequest(),
                                                        timeout=5)
                    if info.model_version == version:
                        return
                await asyncio.sleep(0.05)


ReplicaFactory = Callable[..., AbstractAsyncContextManager[Replica]]


@pytest.fixture
def servers(mlflow_server: MlflowServer, redis_server: RedisServer) -> dict[str, str]:
    """Replica settings for the session's MLflow and Redis."""
    return {"mlflow_tracking_uri": mlflow_server.tracking_uri, "redis_url": redis_server.url}


@pytest.fixture
def model_name() -> str:
    return f"recsys-test-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def replica(model_name: str) -> ReplicaFactory:
    """`async with replica(mlflow_tracking_uri=..., redis_url=..., ...) as r`: one server."""

    @asynccontextmanager
    async def start(**settings: object) -> AsyncIterator[Replica]:
        values: dict[str, object] = {"model_name": model_name, "poll_interval_s": 0.2,
                                     "history_consumer": False}
        config = RecommenderSettings(**{**values, **settings})  # type: ignore[arg-type]
        registry = CollectorRegistry()
        app = RecommenderApp(config, registry)
        running = await server.start(app, config, registry)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
                yield Replica(running, app, channel,
                              recommender_pb2_grpc.RecommenderServiceStub(channel))
        finally:
            await running.stop(1.0)

    return start
