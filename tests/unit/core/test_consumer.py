"""The core consumer loop against a fake confluent-kafka Consumer: retries, decoding, commits,
stop, lag, followers."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
from confluent_kafka import KafkaError, KafkaException

from recsys.events.v1 import interaction_pb2
from recsys.model.v1 import model_pb2
from services.core import consumer as consumer_module
from services.core.consumer import Backoff, Batch, ConsumerLoop, Subscription
from tests.support.fake_kafka import FakeBroker, expect_committed
from tests.support.polling import eventually

TOPIC = "interactions"
Loop = ConsumerLoop[interaction_pb2.Interaction]


def interaction(n: int) -> bytes:
    return interaction_pb2.Interaction(event_id=f"e{n}", user_id="u1",
                                       item_id=f"i{n}").SerializeToString()


@dataclass(frozen=True)
class RecordingBackoff(Backoff):
    """Tiny waits, and which failure counts the loop asked a wait for."""

    first_s: float = 0.001
    longest_s: float = 0.004
    asked: list[int] = field(default_factory=list)

    def delay_s(self, failures: int) -> float:
        self.asked.append(failures)
        return super().delay_s(failures)


@dataclass
class Handler:
    """Records every batch it gets and the committed offsets at that moment; raises `error`
    for its first `failures` calls."""

    broker: FakeBroker
    failures: int = 0
    error: Callable[[], Exception] = lambda: RuntimeError("a bug in the handler")
    seen: list[list[tuple[int, int, str | None]]] = field(default_factory=list)
    committed_then: list[dict[int, int]] = field(default_factory=list)

    def __call__(self, batch: Batch[interaction_pb2.Interaction]) -> None:
        self.seen.append([(r.partition, r.offset, r.message.event_id if r.message else None)
                          for r in batch.records])
        self.committed_then.append(dict(self.broker.committed))
        if len(self.seen) <= self.failures:
            raise self.error()


def code(error: Exception) -> int | None:
    """The librdkafka error code of a KafkaException (None for anything else)."""
    return error.args[0].code() if isinstance(error, KafkaException) else None


@pytest.fixture
def broker(monkeypatch: pytest.MonkeyPatch) -> FakeBroker:
    broker = FakeBroker(TOPIC, partitions=2)
    monkeypatch.setattr(consumer_module, "Consumer", broker)
    return broker


@pytest.fixture
def errors() -> list[Exception]:
    return []


@pytest.fixture
def run(broker: FakeBroker, errors: list[Exception]) -> Iterator[Callable[..., Loop]]:
    """Start a loop on the fake broker; every loop started is stopped at the end."""
    loops: list[Loop] = []

    def start(handler: Callable[[Batch[interaction_pb2.Interaction]], None], *,
              backoff: Backoff | None = None, max_records: int = 10,
              group_id: str | None = "g", poll_timeout_ms: int = 50) -> Loop:
        loop = ConsumerLoop(
            Subscription(bootstrap="fake:9092", topic=TOPIC, group_id=group_id, name="test",
                         max_records=max_records, poll_timeout_ms=poll_timeout_ms),
            handler, on_error=errors.append, backoff=backoff or RecordingBackoff())
        loops.append(loop)
        loop.start()
        return loop

    yield start
    for loop in loops:
        loop.stop()


def test_a_failing_handler_gets_the_same_records_again_and_nothing_is_committed_before(
        broker: FakeBroker, run: Callable[..., Loop],
        errors: list[Exception], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=consumer_module.__name__)
    broker.produce(0, interaction(1), interaction(2))
    broker.produce(1, interaction(3))
    handler = Handler(broker, failures=3)
    backoff = RecordingBackoff()
    loop = run(handler, backoff=backoff)
    expect_committed(broker, {0: 2, 1: 1})
    loop.stop()  # every log line is written once the thread has ended

    expected = [(0, 0, "e1"), (0, 1, "e2"), (1, 0, "e3")]
    assert handler.seen == [expected] * 4
    assert handler.committed_then == [{}] * 4
    assert [type(e) for e in errors] == [RuntimeError] * 3
    assert backoff.asked == [1, 2, 3]  # a wait after each failure, longer each time
    failed = [r for r in caplog.records if r.name == consumer_module.__name__
              and r.levelno >= logging.WARNING]
    assert len(failed) == 1  # once per streak, with the traceback of the unexpected error
    assert failed[0].levelno == logging.ERROR and failed[0].exc_info is not None
    assert any(r.getMessage() == "consumer recovered" and r.__dict__["failures"] == 3
               for r in caplog.records)
    assert len(broker.consumers) == 1  # the consumer sought back; it was not replaced


def test_after_a_success_the_backoff_starts_again_from_the_first_wait(
        broker: FakeBroker, run: Callable[..., Loop],
        errors: list[Exception]) -> None:
    broker.produce(0, interaction(1))
    handler = Handler(broker, failures=2)
    backoff = RecordingBackoff()
    run(handler, backoff=backoff)
    expect_committed(broker, {0: 1})
    handler.failures = len(handler.seen) + 1  # the next batch fails once
    broker.produce(0, interaction(2))
    expect_committed(broker, {0: 2})
    assert backoff.asked == [1, 2, 1]
    assert len(errors) == 3


def test_values_that_do_not_decode_are_handed_as_none_and_the_loop_goes_on(
        broker: FakeBroker, run: Callable[..., Loop],
        errors: list[Exception]) -> None:
    broker.produce(0, b"\xff\xff not protobuf", interaction(1), None)
    handler = Handler(broker)
    run(handler)
    expect_committed(broker, {0: 3})
    broker.produce(0, interaction(2))
    expect_committed(broker, {0: 4})
    assert handler.seen == [[(0, 0, None), (0, 1, "e1"), (0, 2, None)], [(0, 3, "e2")]]
    assert errors == []


def test_a_loop_decodes_the_message_it_is_given(
        broker: FakeBroker, errors: list[Exception]) -> None:
    version = model_pb2.ModelVersion(version="3", model_name="recsys-mf")
    broker.produce(0, version.SerializeToString())
    seen: list[model_pb2.ModelVersion | None] = []
    loop = ConsumerLoop(
        Subscription(bootstrap="fake:9092", topic=TOPIC, group_id="g", name="test",
                     poll_timeout_ms=50),
        lambda batch: seen.extend(r.message for r in batch.records),
        message=model_pb2.ModelVersion, on_error=errors.append)
    loop.start()
    try:
        expect_committed(broker, {0: 1})
    finally:
        loop.stop()
    assert seen == [version]


def test_broker_and_commit_failures_are_retried_and_logged_without_a_traceback(
        broker: FakeBroker, run: Callable[..., Loop],
        errors: list[Exception], caplog: pytest.LogCaptureFixture) -> None:
    broker.fail_connects = 2
    broker.fail_commits = 1
    broker.produce(0, interaction(1))
    handler = Handler(broker)
    run(handler)
    expect_committed(broker, {0: 1})
    assert [code(e) for e in errors] == [KafkaError._TRANSPORT, KafkaError._TRANSPORT,
                                         KafkaError.REBALANCE_IN_PROGRESS]
    assert handler.seen == [[(0, 0, "e1")]] * 2  # handled again after the failed commit
    assert len(broker.consumers) == 1
    failed = [r for r in caplog.records if r.name == consumer_module.__name__
              and r.levelno >= logging.WARNING]
    assert [(r.levelno, r.exc_info) for r in failed] == [(logging.WARNING, None)]  # one streak


def test_stop_ends_the_loop_even_while_it_waits_and_closes_without_committing(
        broker: FakeBroker, run: Callable[..., Loop],
        errors: list[Exception]) -> None:
    broker.produce(0, interaction(1))
    loop = run(Handler(broker, failures=1_000), backoff=Backoff(first_s=60.0, longest_s=60.0))
    eventually(lambda: bool(errors), timeout=10, what="a failed batch")
    loop.stop(timeout=10.0)
    loop.stop()  # idempotent
    assert [c.closed for c in broker.consumers] == [True]
    assert broker.committed == {}
    assert len(errors) == 1  # the 60 s wait was cut short, not served


def test_lag_is_the_high_watermark_minus_the_position(
        broker: FakeBroker, run: Callable[..., Loop]) -> None:
    broker.produce(0, *(interaction(n) for n in range(5)))
    broker.produce(1, interaction(5))
    lags: list[int] = []

    def handler(batch: Batch[interaction_pb2.Interaction]) -> None:
        lags.append(loop.lag)

    loop = run(handler, max_records=2)
    expect_committed(broker, {0: 5, 1: 1})
    assert lags[0] == 4  # 6 records, 2 polled
    assert loop.lag == 0


def test_a_follower_reads_every_partition_from_its_start_each_time_and_commits_nothing(
        broker: FakeBroker, run: Callable[..., Loop]) -> None:
    broker.produce(0, interaction(1), interaction(2))
    broker.produce(1, interaction(3))
    broker.committed = {0: 2, 1: 1}  # some group's offsets: a follower has none of its own
    for _ in range(2):  # a restarted follower reads it all again
        handler = Handler(broker)
        loop = run(handler, group_id=None)
        eventually(lambda: loop.caught_up, timeout=10, what="the follower caught up")  # noqa: B023
        loop.stop()
        assert sorted(r for batch in handler.seen for r in batch) == [
            (0, 0, "e1"), (0, 1, "e2"), (1, 0, "e3")]
    assert broker.committed == {0: 2, 1: 1}


def test_a_follower_of_a_topic_not_made_yet_has_read_everything_and_reads_it_once_made(
        broker: FakeBroker, run: Callable[..., Loop]) -> None:
    broker.exists = False
    handler = Handler(broker)
    loop = run(handler, group_id=None)
    eventually(lambda: loop.caught_up, timeout=10, what="caught up with a missing topic")
    broker.produce(0, interaction(1))
    broker.exists = True
    eventually(lambda: handler.seen == [[(0, 0, "e1")]], timeout=10,
               what="the topic's first record, once the topic exists")
    assert loop.caught_up


def test_a_follower_has_read_a_partition_that_holds_nothing(
        broker: FakeBroker, run: Callable[..., Loop]) -> None:
    broker.produce(1, interaction(1))  # partition 0 stays empty: no position is ever read there
    handler = Handler(broker)
    loop = run(handler, group_id=None)
    eventually(lambda: loop.caught_up, timeout=10, what="the follower caught up")
    assert handler.seen == [[(1, 0, "e1")]]


def test_errors_the_client_reports_are_counted_and_logged_once_until_records_come(
        broker: FakeBroker, run: Callable[..., Loop], errors: list[Exception],
        caplog: pytest.LogCaptureFixture) -> None:
    handler = Handler(broker)
    run(handler)
    for _ in range(3):  # a broker down: librdkafka reports it and reconnects by itself
        broker.report(KafkaError(KafkaError._TRANSPORT, "connection refused"))
    eventually(lambda: len(errors) == 3, timeout=10, what="three reported errors counted")
    broker.produce(0, interaction(1))
    expect_committed(broker, {0: 1})
    broker.report(KafkaError(KafkaError._ALL_BROKERS_DOWN, "all brokers down"))
    eventually(lambda: len(errors) == 4, timeout=10, what="the next outage counted")
    assert {code(e) for e in errors} == {KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN}
    warned = [r.getMessage() for r in caplog.records
              if r.name == consumer_module.__name__ and r.levelno == logging.WARNING]
    assert warned == ["Kafka client error: connection refused",
                      "Kafka client error: all brokers down"]
    assert len(broker.consumers) == 1  # no failure of the loop: the same client goes on
    assert handler.seen == [[(0, 0, "e1")]]


def test_a_fatal_client_error_is_a_failure_and_the_client_is_replaced(
        broker: FakeBroker, run: Callable[..., Loop], errors: list[Exception]) -> None:
    handler = Handler(broker)
    run(handler)
    eventually(lambda: broker.consumers, timeout=10, what="a consumer")
    broker.report(KafkaError(KafkaError._FENCED, "fenced", fatal=True))
    broker.produce(0, interaction(1))
    expect_committed(broker, {0: 1})
    assert [code(e) for e in errors] == [KafkaError._FENCED]
    assert [c.closed for c in broker.consumers] == [True, False]


def test_the_backoff_doubles_up_to_its_longest_wait() -> None:
    backoff = Backoff(first_s=0.5, longest_s=30.0)
    assert [backoff.delay_s(n) for n in range(1, 9)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert backoff.delay_s(100_000) == 30.0  # an outage of days does not overflow


def test_a_record_is_handed_over_as_soon_as_it_is_there_not_when_a_batch_is_full(
        broker: FakeBroker, run: Callable[..., Loop]) -> None:
    handler = Handler(broker)
    loop = run(handler, max_records=1000, poll_timeout_ms=60_000)  # a poll far longer than
    broker.produce(0, interaction(1))                               # the wait below
    expect_committed(broker, {0: 1})
    waking = threading.Timer(0.05, broker.produce, (0, interaction(2)))  # ends the last poll
    waking.start()
    loop.stop()
    waking.join()
    assert handler.seen[0] == [(0, 0, "e1")]
