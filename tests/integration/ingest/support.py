"""Helpers for the ingest integration tests: a real ingest server, topic reads, statuses."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from prometheus_client import CollectorRegistry

from recsys.events.v1 import interaction_pb2
from recsys.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from services.core import server
from services.core.client import aio_channel
from services.core.kafka import consumer_config
from services.ingest.app import IngestApp
from services.ingest.servicer import SERVICE
from services.ingest.settings import IngestSettings


@dataclass
class Ingest:
    """A running ingest server and what a test needs to talk to it."""

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

    async def health(self) -> int:
        stub = health_pb2_grpc.HealthStub(self.channel)
        answer = await stub.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=2)
        return answer.status

    async def wait_health(self, status: int, within: float = 20.0) -> float:
        """Seconds until health reports `status`; fails the test after `within` seconds."""
        started = time.monotonic()
        while await self.health() != status:
            assert time.monotonic() - started < within, f"health not {status} in {within} s"
            await asyncio.sleep(0.05)
        return time.monotonic() - started

    def metric(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, labels)

    async def stop(self) -> None:
        await self.channel.close()
        await self.running.stop(2.0)


async def start_ingest(bootstrap: str, topic: str | None = None, **settings: object) -> Ingest:
    """An ingest server on port 0 (in this process), SERVING once its topic exists."""
    config = IngestSettings(kafka_bootstrap=bootstrap,
                            kafka_topic=topic or f"interactions-{uuid.uuid4().hex[:10]}",
                            health_interval_s=0.2, **settings)  # type: ignore[arg-type]
    registry = CollectorRegistry()
    running = await server.start(IngestApp(config, registry), config, registry)
    ingest = Ingest(running, config, registry)
    await ingest.wait_health(health_pb2.HealthCheckResponse.SERVING)
    return ingest


def read_topic(bootstrap: str, topic: str, *, idle_s: float = 5.0) -> list[ConsumerRecord]:
    """Every record on `topic`, read from the beginning with a fresh group until each
    partition's position reaches the high watermark its fetch reported, or until nothing new
    arrived for `idle_s` (a broker that lost a batch may report a mark it cannot serve)."""
    consumer = KafkaConsumer(**consumer_config(
        bootstrap, group_id=f"test-{uuid.uuid4().hex}", client_id="ingest-test-reader"))
    try:
        deadline = time.monotonic() + 30
        while not (partitions := consumer.partitions_for_topic(topic)):
            assert time.monotonic() < deadline, f"topic {topic} has no partitions"
            time.sleep(0.1)
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        consumer.seek_to_beginning(*assigned)
        records: list[ConsumerRecord] = []
        last_new = time.monotonic()
        while time.monotonic() - last_new < idle_s:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
                last_new = time.monotonic()
            marks = [consumer.highwater(tp) for tp in assigned]
            if all(m is not None and consumer.position(tp) >= m
                   for tp, m in zip(assigned, marks, strict=True)):
                break
        return records
    finally:
        consumer.close()


def make_event(n: int, **fields: object) -> interaction_pb2.Interaction:
    """A valid rating, unique by `n`, from about an hour ago; `fields` override."""
    values: dict[str, object] = {
        "user_id": f"user-{n % 13}", "item_id": f"item-{n}",
        "type": interaction_pb2.INTERACTION_TYPE_RATING, "value": 0.5 + (n % 10) / 2}
    values.update(fields)
    event = interaction_pb2.Interaction(**values)  # type: ignore[arg-type]
    event.occurred_at.FromNanoseconds(time.time_ns() - 3_600_000_000_000 + n)
    return event


def chunks(events: list[interaction_pb2.Interaction], size: int
           ) -> Iterator[ingest_pb2.StreamInteractionsRequest]:
    for start in range(0, len(events), size):
        yield ingest_pb2.StreamInteractionsRequest(interactions=events[start:start + size])
