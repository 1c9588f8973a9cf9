"""A RecommenderService replica in the test's process (port 0), against real MLflow, Redis and
Tansu, and what a test asks of it."""

from __future__ import annotations

import contextlib
import urllib.request
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from recsys.recommender.v1 import recommender_pb2, recommender_pb2_grpc
from services.core import server
from services.recommender.app import RecommenderApp
from services.recommender.servicer import SERVICE_NAME
from services.recommender.settings import RecommenderSettings
from tests.support.polling import eventually_async


@dataclass
class Replica:
    running: server.RunningServer
    app: RecommenderApp
    registry: CollectorRegistry
    channel: grpc.aio.Channel
    stub: recommender_pb2_grpc.RecommenderServiceStub

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.running.port}"

    def metric(self, name: str, /, **labels: str) -> float:
        """The sum of the samples `name` whose labels include `labels`, scraped from /metrics."""
        url = f"http://127.0.0.1:{self.running.metrics_port}/metrics"
        body = urllib.request.urlopen(url, timeout=5).read().decode()
        return sum(
            sample.value
            for family in text_string_to_metric_families(body)
            for sample in family.samples
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
        )

    async def health(self) -> int:
        reply = await health_pb2_grpc.HealthStub(self.channel).Check(
            health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=5)
        return reply.status

    async def serving(self) -> bool:
        """Whether health says RecommenderService is SERVING."""
        return await self.health() == health_pb2.HealthCheckResponse.SERVING

    async def recommend(self, user_id: str, **fields: object) -> recommender_pb2.RecommendResponse:
        request = recommender_pb2.RecommendRequest(user_id=user_id, **fields)  # type: ignore[arg-type]
        return await self.stub.Recommend(request, timeout=5)

    async def wait_for_version(self, version: str) -> None:
        """Until GetModelInfo names `version`."""
        async def serves() -> bool:
            info = await self.stub.GetModelInfo(recommender_pb2.GetModelInfoRequest(),
                                                timeout=5)
            return info.model_version == version

        await eventually_async(serves, timeout=30, what=f"model version {version} served")


ReplicaFactory = Callable[..., AbstractAsyncContextManager[Replica]]


@contextlib.asynccontextmanager
async def running_replica(settings: RecommenderSettings) -> AsyncIterator[Replica]:
    """One replica with `settings`, stopped on leaving."""
    registry = CollectorRegistry()
    app = RecommenderApp(settings, registry)
    running = await server.start(app, settings, registry)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            yield Replica(running, app, registry, channel,
                          recommender_pb2_grpc.RecommenderServiceStub(channel))
    finally:
        await running.stop(1.0)
