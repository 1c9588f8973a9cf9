"""Feeds the dataset from Kafka: poll, append durably, then commit the offsets.

kafka-python blocks, so the loop runs in its own thread. Offsets are committed only after the
append's transaction is on disk: a crash between the two re-reads records that the store
already holds, and their event_ids make that a no-op. Lag is the high watermark that fetch
responses carry minus the position (never `end_offsets()`: Tansu answers it wrongly).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from google.protobuf.message import DecodeError
from kafka import KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata

from recsys.events.v1 import interaction_pb2
from services.core.kafka import PLAINTEXT, KafkaSecurity, consumer_config
from services.trainer.dataset import DatasetStore, StoredEvent
from services.trainer.metrics import TrainerMetrics

log = logging.getLogger(__name__)

_POLL_TIMEOUT_MS = 500
_BACKOFF_S = (0.5, 30.0)  # first and longest wait before reconnecting after an error
_TYPE_PREFIX = "INTERACTION_TYPE_"


def decode(value: bytes | None, *, partition: int, offset: int) -> StoredEvent | None:
    """The stored form of one record's Interaction; None when it cannot be trained on."""
    if not value:
        return None
    try:
        event = interaction_pb2.Interaction.FromString(value)
    except DecodeError:
        return None
    if (not event.event_id or not event.user_id or not event.item_id
            or event.type == interaction_pb2.INTERACTION_TYPE_UNSPECIFIED
            or not event.HasField("occurred_at")):
        return None
    try:
        kind = interaction_pb2.InteractionType.Name(event.type)
    except ValueError:  # a type added to the contract after this build
        return None
    return StoredEvent(
        event_id=event.event_id,
        user_id=event.user_id,
        item_id=event.item_id,
        type=kind.removeprefix(_TYPE_PREFIX).lower(),
        value=event.value if event.HasField("value") else None,
        occurred_at_us=event.occurred_at.ToMicroseconds(),
        partition=partition,
        offset=offset,
    )


class EventConsumer:
    """The consumer-group thread; `start()` returns at once, `stop()` joins it."""

    def __init__(
        self,
        store: DatasetStore,
        metrics: TrainerMetrics,
        *,
        bootstrap: str,
        topic: str,
        group_id: str,
        batch: int,
        security: KafkaSecurity = PLAINTEXT,
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._bootstrap = bootstrap
        self._security = security
        self._topic = topic
        self._group_id = group_id
        self._batch = batch
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="trainer-consumer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the loop to finish its batch and close the consumer; idempotent."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        backoff = _BACKOFF_S[0]
        while not self._stopping.is_set():
            consumer: KafkaConsumer | None = None
            try:
                consumer = KafkaConsumer(
                    self._topic,
                    **consumer_config(self._bootstrap, group_id=self._group_id,
                                      client_id="trainer", security=self._security),
                    max_poll_records=self._batch,
                )
                while not self._stopping.is_set():
                    records = consumer.poll(timeout_ms=_POLL_TIMEOUT_MS)
                    if records:
                        self._append(consumer, records)
                    self._update_lag(consumer)
                    backoff = _BACKOFF_S[0]
            except Exception:  # the broker is down or the group rebalanced: reconnect
                log.exception("consumer failed; reconnecting", extra={"retry_in_s": backoff})
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, _BACKOFF_S[1])
            finally:
                if consumer is not None:
                    _close(consumer)

    def _append(self, consumer: KafkaConsumer, records: dict[TopicPartition, list[Any]]) -> None:
        events: list[StoredEvent] = []
        next_offsets: dict[TopicPartition, int] = {}
        invalid: list[str] = []
        for tp, batch in records.items():
            for record in batch:
                event = decode(record.value, partition=tp.partition, offset=record.offset)
                if event is None:
                    invalid.append(f"{tp.partition}@{record.offset}")
                else:
                    events.append(event)
            next_offsets[tp] = batch[-1].offset + 1
        if invalid:
            log.warning("skipped events that cannot be trained on",
                        extra={"count": len(invalid), "first": invalid[0]})
        added = self._store.append(
            events, topic=self._topic,
            next_offsets={tp.partition: o for tp, o in next_offsets.items()},
        )
        # Durable now: only from here may Kafka forget these records.
        consumer.commit({tp: OffsetAndMetadata(o, "", -1) for tp, o in next_offsets.items()})
        counted = self._metrics.events_consumed
        counted.labels("stored").inc(added)
        counted.labels("duplicate").inc(len(events) - added)
        counted.labels("invalid").inc(len(invalid))
        self._metrics.dataset_rows.set(self._store.row_count)

    def _update_lag(self, consumer: KafkaConsumer) -> None:
        lag = 0
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            if highwater is not None:
                lag += max(highwater - consumer.position(tp), 0)
        self._metrics.consumer_lag.set(lag)


def _close(consumer: KafkaConsumer) -> None:
    """Leave the group if the broker answers; a failure here must not end the thread."""
    try:
        consumer.close(autocommit=False)
    except Exception:
        log.warning("closing the consumer failed", exc_info=True)
