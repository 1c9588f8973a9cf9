"""A fake of the one boundary the core consumer loop crosses: confluent-kafka's Consumer.

`FakeBroker` holds one topic's partitions and one group's committed offsets; called like the
Consumer class (monkeypatch `services.core.consumer.Consumer` with it), it returns a
`FakeConsumer`. One that subscribes starts from the committed offsets, as a group member does;
one that assigns itself the partitions from OFFSET_BEGINNING (a follower) reads them from the
start and, as librdkafka does, has no position on a partition until it read a record there.
`exists` False plays a topic not created yet. `report` hands an error to the client's
`error_cb` at its next poll, as librdkafka reports a broker it cannot reach.
`expect_committed` waits until the group committed given offsets: everything before them has
been handled.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, OFFSET_INVALID, KafkaError, KafkaException
from confluent_kafka import TopicPartition as TP

from tests.support.polling import eventually


@dataclass(frozen=True)
class FakeMessage:
    """A record (`error()` None) or an error event, as `Consumer.consume` returns them."""

    _partition: int
    _offset: int
    _value: bytes | None
    _error: KafkaError | None = None

    def error(self) -> KafkaError | None:
        return self._error

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes | None:
        return self._value


@dataclass(frozen=True)
class FakeTopicMetadata:
    partitions: dict[int, object]
    error: KafkaError | None


@dataclass(frozen=True)
class FakeClusterMetadata:
    topics: dict[str, FakeTopicMetadata] = field(default_factory=dict)


class FakeBroker:
    """`fail_connects` / `fail_commits`: how many of the next connections / commits fail."""

    def __init__(self, topic: str, *, partitions: int = 1) -> None:
        self.topic = topic
        self.log: dict[int, list[bytes | None]] = {p: [] for p in range(partitions)}
        self.committed: dict[int, int] = {}
        self.consumers: list[FakeConsumer] = []
        self.fail_connects = 0
        self.fail_commits = 0
        self.exists = True
        self.reported: list[KafkaError] = []
        self.changed = threading.Condition()

    def produce(self, partition: int, *values: bytes | None) -> None:
        with self.changed:
            self.log[partition].extend(values)
            self.changed.notify_all()

    def report(self, error: KafkaError) -> None:
        with self.changed:
            self.reported.append(error)
            self.changed.notify_all()

    def __call__(self, config: dict[str, Any]) -> FakeConsumer:
        with self.changed:
            if self.fail_connects:
                self.fail_connects -= 1
                self.changed.notify_all()
                raise KafkaException(KafkaError(KafkaError._TRANSPORT,
                                                "Unable to bootstrap from the fake broker"))
            consumer = FakeConsumer(self, config)
            self.consumers.append(consumer)
            self.changed.notify_all()
            return consumer


class FakeConsumer:
    def __init__(self, broker: FakeBroker, config: dict[str, Any]) -> None:
        self.options = config
        self.closed = False
        self.subscribed = False
        self.num_messages: list[int] = []  # what each `consume` asked for
        self._broker = broker
        self._positions: dict[int, int] = {}  # partition → next offset; OFFSET_INVALID: none

    def subscribe(self, topics: list[str]) -> None:
        assert topics == [self._broker.topic]
        self.subscribed = True
        self._positions = {p: self._broker.committed.get(p, 0) for p in self._broker.log}

    def list_topics(self, topic: str, timeout: float) -> FakeClusterMetadata:
        assert topic == self._broker.topic
        if not self._broker.exists:
            error = KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART)
            return FakeClusterMetadata({topic: FakeTopicMetadata({}, error)})
        partitions: dict[int, object] = dict.fromkeys(self._broker.log)
        return FakeClusterMetadata({topic: FakeTopicMetadata(partitions, None)})

    def assign(self, partitions: list[TP]) -> None:
        """A follower's own assignment: no group, so every partition from its start."""
        assert not self.subscribed
        assert all(tp.offset == OFFSET_BEGINNING for tp in partitions)
        self._positions = {tp.partition: OFFSET_INVALID for tp in partitions}

    def assignment(self) -> list[TP]:
        return [TP(self._broker.topic, p) for p in self._positions]

    def _next(self, partition: int) -> int:
        return max(self._positions[partition], 0)

    def _pending(self) -> int:
        return sum(max(len(self._broker.log[p]) - self._next(p), 0) for p in self._positions)

    def consume(self, num_messages: int, timeout: float) -> list[FakeMessage]:
        """Up to `num_messages` records from the positions on; as librdkafka's, it waits for
        `num_messages` of them (or a reported error) until the timeout."""
        self.num_messages.append(num_messages)
        with self._broker.changed:
            self._broker.changed.wait_for(
                lambda: self._broker.reported or self._pending() >= num_messages, timeout)
            reported, self._broker.reported = self._broker.reported, []
            budget = num_messages
            polled: list[FakeMessage] = []
            for partition in self._positions:
                start = self._next(partition)
                values = self._broker.log[partition][start:start + budget]
                if values:
                    polled.extend(FakeMessage(partition, start + i, v)
                                  for i, v in enumerate(values))
                    self._positions[partition] = start + len(values)
                    budget -= len(values)
            self._broker.changed.notify_all()
        for error in reported:  # served from the poll, in the polling thread
            self.options["error_cb"](error)
        return polled

    def position(self, partitions: list[TP]) -> list[TP]:
        return [TP(tp.topic, tp.partition, self._positions[tp.partition]) for tp in partitions]

    def get_watermark_offsets(self, tp: TP, *, cached: bool) -> tuple[int, int]:
        assert cached, "never ListOffsets: Tansu answers it wrongly"
        return 0, len(self._broker.log[tp.partition])

    def seek(self, tp: TP) -> None:
        self._positions[tp.partition] = tp.offset

    def commit(self, *, offsets: list[TP], asynchronous: bool) -> list[TP]:
        assert asynchronous is False, "the loop commits before it reads on"
        with self._broker.changed:
            if self._broker.fail_commits:
                self._broker.fail_commits -= 1
                raise KafkaException(KafkaError(KafkaError.REBALANCE_IN_PROGRESS,
                                                "the group rebalanced"))
            self._broker.committed.update({tp.partition: tp.offset for tp in offsets})
            self._broker.changed.notify_all()
            return offsets

    def close(self) -> None:
        assert self.options["enable.auto.commit"] is False, "the loop commits what it handled"
        with self._broker.changed:
            self.closed = True
            self._broker.changed.notify_all()


def expect_committed(broker: FakeBroker, offsets: dict[int, int]) -> None:
    """Until `broker`'s group has committed exactly `offsets` (partition → next offset)."""
    eventually(lambda: broker.committed == offsets, timeout=10,
               what=f"offsets {offsets} committed")
