"""IngestService wired together: settings → publisher, ingest core, servicer, broker watch."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from datetime import datetime

from prometheus_client import CollectorRegistry

from recsys.ingest.v1 import ingest_pb2_grpc
from services.core.health import HealthReporter
from services.core.server import ServiceBinding
from services.ingest.ingestor import Ingestor
from services.ingest.metrics import IngestMetrics
from services.ingest.publisher import Publisher
from services.ingest.servicer import SERVICE, IngestServicer
from services.ingest.settings import IngestSettings
from services.ingest.validation import Limits, Validator

log = logging.getLogger(__name__)

#: The broker check backs off up to this many health intervals while the broker is down.
MAX_BACKOFF_INTERVALS = 4


class IngestApp:
    def __init__(self, settings: IngestSettings, registry: CollectorRegistry) -> None:
        self._settings = settings
        self.publisher = Publisher(
            bootstrap=settings.kafka_bootstrap, topic=settings.kafka_topic,
            partitions=settings.topic_partitions, replication=settings.topic_replication,
            security=settings.kafka_security())
        limits = Limits(
            rating_min=settings.rating_min, rating_max=settings.rating_max,
            max_weight=settings.max_weight, max_future_s=settings.max_future_s,
            min_occurred_at=datetime.fromisoformat(settings.min_occurred_at))
        self._metrics = IngestMetrics.create(registry)
        self.ingestor = Ingestor(
            publisher=self.publisher, validator=Validator(limits), metrics=self._metrics,
            max_batch=settings.max_batch,
            ack_timeout_s=settings.ack_timeout_s)
        self._servicer = IngestServicer(self.ingestor)
        self._watch: asyncio.Task[None] | None = None

    @property
    def bindings(self) -> Sequence[ServiceBinding]:
        return [ServiceBinding(SERVICE, lambda server: ingest_pb2_grpc
                               .add_IngestServiceServicer_to_server(self._servicer, server))]

    async def start(self, health: HealthReporter) -> None:
        self._watch = asyncio.create_task(self._watch_broker(health), name="ingest-broker-watch")

    async def drain(self) -> None:
        self.ingestor.drain()

    async def _watch_broker(self, health: HealthReporter) -> None:
        """Keep health in step with the broker: SERVING while it answers and the topic exists
        (created when missing); NOT_SERVING, with backoff between checks, while it does not."""
        interval = self._settings.health_interval_s
        delay, was_ready = interval, None
        while True:
            try:
                await self.publisher.check()
            except Exception as exc:  # any failure means "not reachable now"; never stop
                if was_ready is not False:
                    log.warning("Kafka broker unreachable; ingest is NOT_SERVING",
                                extra={"bootstrap": self._settings.kafka_bootstrap,
                                       "error": repr(exc)})
            ready = self.publisher.ready
            if ready and was_ready is not True:
                log.info("Kafka broker reachable; ingest is SERVING",
                         extra={"bootstrap": self._settings.kafka_bootstrap,
                                "topic": self._settings.kafka_topic})
            self._metrics.broker_up.set(int(ready))
            await health.set_serving(SERVICE, ready)
            was_ready = ready
            delay = interval if ready else min(delay * 2, interval * MAX_BACKOFF_INTERVALS)
            await asyncio.sleep(delay)

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
            self._watch = None
        await self.publisher.close()
