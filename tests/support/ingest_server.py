"""A real IngestService in the test's process (port 0), and what a test needs to talk to it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry

from recsys.catalog.v1 import catalog_pb2_grpc
from recsys.events.v1 import interaction_pb2
from recsys.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from services.core import server
from services.core.client import aio_channel
from services.ingest.app import IngestApp
from services.ingest.servicer import SERVICE
from services.ingest.settings import IngestSettings
from tests.support.polling import eventually_async

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass
class Ingest:
    """A running ingest server, a channel to it and its metrics registry."""

    running: server.RunningServer
    settings: IngestSettings
    registry: CollectorRegistry
    channel: grpc.aio.Channel = field(init=False)

    def __post_init__(self) -> None:
        self.channel = aio_channel(f"127.0.0.1:{self.running.port}")
        self.stub = ingest_pb2_grpc.IngestServiceStub(self.channel)

    @property
    def topic(self) -> str:
        return self.settings.kafka_topic

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.running.port}"

    @property
    def catalog(self) -> catalog_pb2_grpc.CatalogServiceStub:
        return catalog_pb2_grpc.CatalogServiceStub(self.channel)

    async def health(self, service: str = SERVICE) -> int:
        stub = health_pb2_grpc.HealthStub(self.channel)
        answer = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2)
        return answer.status

    async def wait_health(self, status: int, service: str = SERVICE) -> None:
        async def reached() -> bool:
            return await self.health(service) == status

        name = health_pb2.HealthCheckResponse.ServingStatus.Name(status)
        await eventually_async(reached, timeout=30, what=f"{service} health {name}")

    def metric(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, labels)

    async def stop(self) -> None:
        await self.channel.close()
        await self.running.stop(2.0)


async def launch_ingest(bootstrap: str, topic: str | None = None,
                        **settings: object) -> Ingest:
    """An ingest server on port 0, answering at once (SERVING or not)."""
    values: dict[str, object] = {"catalog_topic": f"catalog-{uuid.uuid4().hex[:10]}",
                                 **settings}
    config = IngestSettings(kafka_bootstrap=bootstrap,
                            kafka_topic=topic or f"interactions-{uuid.uuid4().hex[:10]}",
                            health_interval_s=0.2, **values)  # type: ignore[arg-type]
    registry = CollectorRegistry()
    running = await server.start(IngestApp(config, registry), config, registry)
    return Ingest(running, config, registry)


async def start_ingest(bootstrap: str, topic: str | None = None, **settings: object) -> Ingest:
    """An ingest server on port 0, once SERVING (its broker answers and its topic exists)."""
    ingest = await launch_ingest(bootstrap, topic, **settings)
    await ingest.wait_health(SERVING)
    return ingest


def chunks(events: list[interaction_pb2.Interaction], size: int
           ) -> Iterator[ingest_pb2.StreamInteractionsRequest]:
    """StreamInteractions' request messages, `size` events each."""
    for start in range(0, len(events), size):
        yield ingest_pb2.StreamInteractionsRequest(interactions=events[start:start + size])
