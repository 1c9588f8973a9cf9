"""Fakes and event builders for the ingest unit tests."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from kafka.errors import KafkaTimeoutError
from kafka.future import Future
from kafka.producer.future import RecordMetadata
from kafka.structs import TopicPartition

from recsys.events.v1 import interaction_pb2

NOW = datetime(2026, 6, 1, tzinfo=UTC).timestamp()


@dataclass
class Record:
    topic: str
    key: bytes
    value: bytes
    future: Future


class FakeProducer:
    """Records what is sent; acknowledges at once (`auto_ack`) or when a test says so."""

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.auto_ack = True

    def send(self, topic: str, *, value: bytes, key: bytes) -> Future:
        future = Future()
        self.records.append(Record(topic, key, value, future))
        if self.auto_ack:
            future.success(self.metadata(len(self.records) - 1))
        return future

    def metadata(self, offset: int) -> RecordMetadata:
        return RecordMetadata("interactions", 0, TopicPartition("interactions", 0), offset,
                              0, None, 0, 0, -1)

    def settle(self, *, failing: Iterable[int] = (), duplicates: Iterable[int] = ()) -> None:
        """Acknowledge every pending record, failing those at positions `failing` and
        answering those at `duplicates` as kafka-python does a DUPLICATE_SEQUENCE_NUMBER."""
        failing, duplicates = set(failing), set(duplicates)
        for position, record in enumerate(self.records):
            if not record.future.is_done:
                if position in failing:
                    record.future.failure(KafkaTimeoutError("expired"))
                else:
                    offset = -1 if position in duplicates else position
                    record.future.success(self.metadata(offset))

    def close(self, timeout: float | None = None) -> None:
        pass


def make_event(n: int, **fields: object) -> interaction_pb2.Interaction:
    """A valid view event, unique by `n`; `fields` override."""
    values: dict[str, object] = {
        "user_id": f"u{n % 7}", "item_id": f"i{n}", "type": interaction_pb2.INTERACTION_TYPE_VIEW}
    values.update(fields)
    event = interaction_pb2.Interaction(**values)  # type: ignore[arg-type]
    event.occurred_at.FromSeconds(int(NOW) - 3600 + n)
    return event
