"""The ingest core on the real Publisher, with kafka-python's producer faked at its boundary."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
from prometheus_client import CollectorRegistry

from services.ingest.ingestor import Ingestor
from services.ingest.metrics import IngestMetrics
from services.ingest.publisher import Publisher
from services.ingest.validation import Limits, Validator
from tests.support.events import NOW
from tests.support.fake_producer import FakeProducer


@pytest.fixture
def producer() -> FakeProducer:
    return FakeProducer()


@pytest.fixture
async def publisher(producer: FakeProducer) -> AsyncIterator[Publisher]:
    publisher = Publisher(bootstrap="127.0.0.1:1", topic="interactions", partitions=1,
                          replication=1)
    publisher._producer = producer
    publisher._reachable = True
    yield publisher
    await publisher.close()


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def make_ingestor(
    publisher: Publisher, registry: CollectorRegistry
) -> Callable[..., Ingestor]:
    metrics = IngestMetrics.create(registry)

    def make(*, max_batch: int = 1000, ack_timeout_s: float = 5.0) -> Ingestor:
        return Ingestor(publisher=publisher, validator=Validator(Limits()), metrics=metrics,
                        max_batch=max_batch, ack_timeout_s=ack_timeout_s, clock=lambda: NOW)

    return make
