"""The one Kafka consumer loop: poll, decode, hand the batch to a handler, then commit.

The client is confluent-kafka's `Consumer` (librdkafka). Each loop runs in a thread of its own
that owns its consumer and serves its callbacks (librdkafka's log lines and reported errors)
from its polls. A batch's offsets are committed synchronously, only after its handler
returned, so a crash re-reads what was not done.

One rule for every failure (connecting, polling, the handler raising anything at all, the
commit): count it through `on_error`, log it once per streak of failures, wait (`Backoff`:
0.5 s doubling to 30 s, reset by a success) and read the same records again. After a failure
that follows a poll, the consumer seeks back to the batch's first offsets; when there is no
batch, or the seek fails, it is closed and a new one resumes from the group's committed
offsets. Delivery is at least once, in order per partition: handlers must tolerate repeats.

Errors librdkafka reports on its own (a broker it cannot reach, a failed authentication) are
counted through `on_error` and logged once until records flow again; the client reconnects by
itself, so they are no failure of the loop. A subscribed topic that does not exist yet is
nothing to read either: the client looks for it again (and never creates it).

Without a consumer group (`Subscription.group_id` None) a loop follows the topic instead: it
reads every partition from its start each time it connects, and commits nothing. That is how a
service rebuilds a view of a topic (the catalogue) in memory; its handler skips what it has
already applied, and `caught_up` tells when it has read what the topic held.

Lag is the high watermark that fetch responses carry minus the position, never a ListOffsets
answer: the local broker (Tansu) answers ListOffsets(latest) wrongly.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, NamedTuple, TypeVar, overload

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from confluent_kafka import Message as KafkaMessage
from google.protobuf.message import DecodeError, Message

from recsys.events.v1.interaction_pb2 import Interaction
from services.core.kafka import PLAINTEXT, KafkaSecurity, consumer_config, topic_partitions

log = logging.getLogger(__name__)

M = TypeVar("M", bound=Message)

OnError = Callable[[Exception], None]


def decode(message: type[M], value: bytes | None) -> M | None:
    """`value` parsed as `message`; None when it is absent or is not one."""
    if value is None:
        return None
    try:
        return message.FromString(value)
    except DecodeError:
        return None


class Record(NamedTuple, Generic[M]):
    """One record's place in the topic and its decoded value (a tuple: made for every record,
    and a frozen dataclass costs several times as much to make)."""

    partition: int
    offset: int
    message: M | None  # None: the record has no value or it does not decode


@dataclass(frozen=True)
class Batch(Generic[M]):
    """What one poll returned, in order within each partition."""

    records: Sequence[Record[M]]

    def first_offsets(self) -> dict[int, int]:
        first: dict[int, int] = {}
        for record in self.records:
            first.setdefault(record.partition, record.offset)
        return first

    def next_offsets(self) -> dict[int, int]:
        """Per partition, the offset after the batch's last record: what the loop commits."""
        return {record.partition: record.offset + 1 for record in self.records}


@dataclass(frozen=True, kw_only=True)
class Subscription:
    """What a loop reads, in which consumer group, and how it polls."""

    bootstrap: str
    topic: str
    group_id: str | None  # None: follow the topic from its start, without a group
    name: str  # the thread's and the Kafka client's name; logs call the loop by it
    security: KafkaSecurity = PLAINTEXT
    max_records: int = 500  # most records handed to the handler at once
    poll_timeout_ms: int = 500  # how long a poll waits for records (and `stop()` for a poll)
    fetch_max_wait_ms: int = 500  # how long the broker may hold a fetch that found nothing


@dataclass(frozen=True)
class Backoff:
    """Waits between retries: `first_s`, doubling after each failure in a row, at most
    `longest_s`."""

    first_s: float = 0.5
    longest_s: float = 30.0

    def delay_s(self, failures: int) -> float:
        """The wait after the `failures`-th failure in a row (from 1)."""
        return min(self.first_s * 2.0 ** min(failures - 1, 64), self.longest_s)


RETRY_BACKOFF = Backoff()

CALL_TIMEOUT_S = 10.0  # the longest a metadata request may take


class ConsumerLoop(Generic[M]):
    """A consumer-group thread; `start()` returns at once, `stop()` ends it.

    `handler` gets each batch of `message`s (Interaction unless told otherwise); `on_error` is
    called with every failure, for the service's metrics; exceptions of the `outages` types
    (and KafkaException) mean a dependency is down and are logged without a traceback.
    """

    @overload
    def __init__(self: ConsumerLoop[Interaction], subscription: Subscription,
                 handler: Callable[[Batch[Interaction]], None], *, on_error: OnError,
                 outages: tuple[type[Exception], ...] = (),
                 backoff: Backoff = RETRY_BACKOFF) -> None: ...

    @overload
    def __init__(self, subscription: Subscription, handler: Callable[[Batch[M]], None], *,
                 message: type[M], on_error: OnError, outages: tuple[type[Exception], ...] = (),
                 backoff: Backoff = RETRY_BACKOFF) -> None: ...

    def __init__(self, subscription: Subscription, handler: Callable[[Batch[Any]], None], *,
                 message: type[Message] = Interaction, on_error: OnError,
                 outages: tuple[type[Exception], ...] = (),
                 backoff: Backoff = RETRY_BACKOFF) -> None:
        self._subscription = subscription
        self._handler = handler
        self._message = message
        self._on_error = on_error
        self._outages: tuple[type[Exception], ...] = (KafkaException, *outages)
        self._backoff = backoff
        self._failures = 0  # in a row; 0 while the loop works
        self._client_error_logged = False  # since records last came
        #: Records in the topic not consumed yet, over the assigned partitions (0 until known).
        self.lag = 0
        #: For a follower: it has read every partition up to the high watermark of a fetch (or
        #: found no such topic), so what the topic held when it started has been handed to the
        #: handler. Stays true.
        self.caught_up = False
        self._at_end = False  # the last poll reached the end (`caught_up` once it is handled)
        self._reached_end = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=subscription.name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wait_caught_up(self) -> bool:
        """Block until `caught_up` (True) or the loop is stopped (False)."""
        while not self._reached_end.wait(0.1):
            if self._stopping.is_set():
                return False
        return True

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the loop to end after its batch and close the consumer, uncommitted offsets left
        for the group's next owner; idempotent."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        consumer: Consumer | None = None
        while not self._stopping.is_set():
            batch: Batch[Any] | None = None
            try:
                if consumer is None:
                    consumer = self._connect()
                batch = self._poll(consumer)
                if batch.records:
                    self._handler(batch)
                    self._commit(consumer, batch)
                # Only now: what the poll that reached the end brought has been handled.
                if self._at_end and not self.caught_up:
                    self.caught_up = True
                    self._reached_end.set()
            except Exception as exc:  # one rule for all: count, log, back off, read it again
                delay_s = self._failed(exc)
                if consumer is not None and not self._rewind(consumer, batch):
                    _close(consumer)
                    consumer = None
                self._stopping.wait(delay_s)
            else:
                self._succeeded()
        if consumer is not None:
            _close(consumer)

    def _connect(self) -> Consumer:
        sub = self._subscription
        consumer = Consumer({
            **consumer_config(sub.bootstrap, group_id=sub.group_id, client_id=sub.name,
                              security=sub.security),
            "fetch.wait.max.ms": sub.fetch_max_wait_ms,
            "error_cb": self._client_error,
        })
        if sub.group_id is not None:
            consumer.subscribe([sub.topic])
        return consumer

    def _poll(self, consumer: Consumer) -> Batch[Any]:
        sub = self._subscription
        if sub.group_id is None and not consumer.assignment():
            partitions = topic_partitions(consumer, sub.topic, timeout_s=CALL_TIMEOUT_S)
            if not partitions:  # no topic yet: nothing to read, look again after a while
                self._at_end = True
                self._stopping.wait(sub.poll_timeout_ms / 1000)
                return Batch([])
            consumer.assign([TopicPartition(sub.topic, p, OFFSET_BEGINNING) for p in partitions])
        polled = _take(consumer, sub.max_records, timeout_s=sub.poll_timeout_ms / 1000)
        records: list[Record[Any]] = []
        for message in polled:
            if (error := message.error()) is None:
                # A record without an error always has its partition and offset.
                records.append(Record(message.partition(), message.offset(),  # type: ignore[arg-type]
                                      decode(self._message, message.value())))
            elif error.code() != KafkaError.UNKNOWN_TOPIC_OR_PART:  # that one: not made yet
                raise KafkaException(error)
        if records:
            self._client_error_logged = False
        marks = _marks(consumer)
        self.lag = _lag(marks)
        if sub.group_id is None:
            self._at_end = _caught_up(marks)
        return Batch(records)

    def _commit(self, consumer: Consumer, batch: Batch[Any]) -> None:
        if self._subscription.group_id is None:  # a follower keeps no offsets
            return
        topic = self._subscription.topic
        committed = consumer.commit(
            offsets=[TopicPartition(topic, partition, offset)
                     for partition, offset in batch.next_offsets().items()],
            asynchronous=False)
        for tp in committed or ():
            if tp.error is not None:
                raise KafkaException(tp.error)

    def _rewind(self, consumer: Consumer, batch: Batch[Any] | None) -> bool:
        """Seek back to `batch`'s first offsets (on the partitions still assigned: the others'
        new owner reads them from the committed offsets); False when that is not possible."""
        if batch is None:
            return False
        topic = self._subscription.topic
        try:
            assigned = {tp.partition for tp in consumer.assignment()}
            for partition, offset in batch.first_offsets().items():
                if partition in assigned:
                    consumer.seek(TopicPartition(topic, partition, offset))
        except Exception:  # a consumer that cannot seek is replaced
            return False
        return True

    def _client_error(self, error: KafkaError) -> None:
        """librdkafka's `error_cb`, called from this loop's polls: counted, logged once until
        records come again; the client retries by itself. A fatal one (the client is unusable)
        is raised from the poll: a failure, and a new client."""
        if error.fatal():
            raise KafkaException(error)
        self._on_error(KafkaException(error))
        if not self._client_error_logged:
            self._client_error_logged = True
            log.warning("Kafka client error: %s", error.str(),
                        extra={"consumer": self._subscription.name,
                               "topic": self._subscription.topic})

    def _failed(self, exc: Exception) -> float:
        """Count and (once per streak) log `exc`; the seconds to wait before the retry."""
        self._failures += 1
        self._on_error(exc)
        delay_s = self._backoff.delay_s(self._failures)
        if self._failures == 1:
            extra = {"consumer": self._subscription.name, "topic": self._subscription.topic,
                     "retry_in_s": delay_s}
            if isinstance(exc, self._outages):
                log.warning("consumer failed, retrying: %r", exc, extra=extra)
            else:
                log.error("consumer failed, retrying", exc_info=exc, extra=extra)
        return delay_s

    def _succeeded(self) -> None:
        if self._failures:
            log.info("consumer recovered", extra={"consumer": self._subscription.name,
                                                  "failures": self._failures})
        self._failures = 0


def _take(consumer: Consumer, most: int, *, timeout_s: float) -> list[KafkaMessage]:
    """Up to `most` records, as soon as any are there. librdkafka's `consume` waits for a full
    batch or the timeout, which would hold a follower's lone record (a hide, an event its
    answers should reflect) for the whole timeout."""
    taken = consumer.consume(num_messages=most, timeout=0)  # what the client holds already
    if not taken:
        taken = consumer.consume(num_messages=1, timeout=timeout_s)
        if taken and most > 1:
            taken += consumer.consume(num_messages=most - 1, timeout=0)
    return taken


class _Mark(NamedTuple):
    """Where an assigned partition stands: the position (-1 before a record was read) and the
    watermarks cached from fetch responses (-1 until a fetch answered)."""

    position: int
    low: int
    high: int


def _marks(consumer: Consumer) -> list[_Mark]:
    return [_Mark(tp.offset, *consumer.get_watermark_offsets(tp, cached=True))
            for tp in consumer.position(consumer.assignment())]


def _lag(marks: list[_Mark]) -> int:
    return sum(max(m.high - m.position, 0) for m in marks if m.high >= 0 and m.position >= 0)


def _caught_up(marks: list[_Mark]) -> bool:
    """Every assigned partition read up to its high watermark; a partition that held nothing
    when it was assigned (no position yet) is read when its low and high watermarks meet."""
    return all(m.high >= 0 and (m.position >= m.high if m.position >= 0 else m.low == m.high)
               for m in marks)


def _close(consumer: Consumer) -> None:
    """Leave the group if the broker answers, committing nothing (auto-commit is off); a
    failure here must not end the thread."""
    try:
        consumer.close()
    except Exception:
        log.warning("closing the consumer failed", exc_info=True)
