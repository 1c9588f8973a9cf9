"""A fake of kafka-python's KafkaProducer, the ingest publisher's boundary: records what is sent
and acknowledges at once (`auto_ack`) or when a test says so (`settle`). Each record notes how
many records had been settled when it was sent, so a test can check the order of the two."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from kafka.errors import KafkaTimeoutError
from kafka.future import Future
from kafka.producer.future import RecordMetadata
from kafka.structs import TopicPartition


@dataclass
class Record:
    topic: str
    key: bytes
    value: bytes
    future: Future
    settled_before: int  # records settled (acknowledged or failed) when this one was sent


class FakeProducer:
    def __init__(self) -> None:
        self.records: list[Record] = []
        self.auto_ack = True

    def settled(self) -> int:
        return sum(record.future.is_done for record in self.records)

    def send(self, topic: str, *, value: bytes, key: bytes) -> Future:
        future = Future()
        self.records.append(Record(topic, key, value, future, self.settled()))
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
