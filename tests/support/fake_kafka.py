"""A fake of the one boundary the core consumer loop crosses: kafka-python's KafkaConsumer.

`FakeBroker` holds one topic's partitions and one group's committed offsets; called like the
KafkaConsumer class (monkeypatch `services.core.consumer.KafkaConsumer` with it), it returns a
`FakeConsumer` that starts from the committed offsets, as a real group member does; one made
without a topic (a follower, with no group) reads the partitions it assigns itself from the
start. `exists` False plays a topic not created yet.
`expect_committed` waits until the group committed given offsets: everything before them has
been handled.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from kafka import TopicPartition
from kafka.errors import CommitFailedError, KafkaTimeoutError
from kafka.structs import OffsetAndMetadata

from tests.support.polling import eventually


@dataclass(frozen=True)
class FakeRecord:
    offset: int
    value: bytes | None


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
        self.changed = threading.Condition()

    def produce(self, partition: int, *values: bytes | None) -> None:
        with self.changed:
            self.log[partition].extend(values)
            self.changed.notify_all()

    def __call__(self, *topics: str, **options: Any) -> FakeConsumer:
        assert topics in ((self.topic,), ())
        with self.changed:
            if self.fail_connects:
                self.fail_connects -= 1
                self.changed.notify_all()
                raise KafkaTimeoutError("Unable to bootstrap from the fake broker")
            consumer = FakeConsumer(self, options, subscribed=bool(topics))
            self.consumers.append(consumer)
            self.changed.notify_all()
            return consumer


class FakeConsumer:
    def __init__(self, broker: FakeBroker, options: dict[str, Any], *,
                 subscribed: bool) -> None:
        self.options = options
        self.closed = False
        self._broker = broker
        self._positions: dict[TopicPartition, int] = {}
        if subscribed:
            self._positions = {TopicPartition(broker.topic, p): broker.committed.get(p, 0)
                               for p in broker.log}

    def assignment(self) -> set[TopicPartition]:
        return set(self._positions)

    def partitions_for_topic(self, topic: str) -> set[int]:
        assert topic == self._broker.topic
        return set(self._broker.log) if self._broker.exists else set()

    def assign(self, partitions: list[TopicPartition]) -> None:
        """A follower's own assignment: no group, so every partition from its start."""
        assert self.options["group_id"] is None
        self._positions = dict.fromkeys(partitions, 0)

    def _pending(self) -> bool:
        return any(len(self._broker.log[tp.partition]) > position
                   for tp, position in self._positions.items())

    def poll(self, timeout_ms: int) -> dict[TopicPartition, list[FakeRecord]]:
        """Up to max_poll_records records from the positions on; waits for some if none."""
        with self._broker.changed:
            self._broker.changed.wait_for(self._pending, timeout_ms / 1000)
            budget = self.options["max_poll_records"]
            polled: dict[TopicPartition, list[FakeRecord]] = {}
            for tp, position in self._positions.items():
                values = self._broker.log[tp.partition][position:position + budget]
                if values:
                    polled[tp] = [FakeRecord(position + i, v) for i, v in enumerate(values)]
                    self._positions[tp] = position + len(values)
                    budget -= len(values)
            self._broker.changed.notify_all()
            return polled

    def highwater(self, tp: TopicPartition) -> int:
        return len(self._broker.log[tp.partition])

    def position(self, tp: TopicPartition) -> int:
        return self._positions[tp]

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self._positions[tp] = offset

    def commit(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
        with self._broker.changed:
            if self._broker.fail_commits:
                self._broker.fail_commits -= 1
                raise CommitFailedError("the group rebalanced")
            self._broker.committed.update({tp.partition: o.offset for tp, o in offsets.items()})
            self._broker.changed.notify_all()

    def close(self, autocommit: bool = True) -> None:
        assert autocommit is False, "the loop commits only what its handler finished"
        with self._broker.changed:
            self.closed = True
            self._broker.changed.notify_all()


def expect_committed(broker: FakeBroker, offsets: dict[int, int]) -> None:
    """Until `broker`'s group has committed exactly `offsets` (partition → next offset)."""
    eventually(lambda: broker.committed == offsets, timeout=10,
               what=f"offsets {offsets} committed")
