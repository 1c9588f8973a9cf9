"""The core consumer loop against a real broker (Tansu): a failed batch is read again, and the
group's offsets move only after the handler succeeded."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import KafkaException
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic

from recsys.events.v1 import interaction_pb2
from scripts.localstack.components import TansuBroker, free_port
from services.core.consumer import Batch, ConsumerLoop, Subscription
from services.core.kafka import producer_config
from tests.support.polling import eventually

pytestmark = pytest.mark.integration

EVENTS = 60
# One handler call: (partition, offset, event_id) of its records; the group's committed offsets.
Call = tuple[list[tuple[int, int, str]], dict[int, int]]


@pytest.fixture
def admins(kafka: TansuBroker) -> Iterator[tuple[KafkaAdminClient, KafkaAdminClient]]:
    """One admin client for the test's thread, one for the loop's (the handler)."""
    clients = (KafkaAdminClient(bootstrap_servers=kafka.bootstrap),
               KafkaAdminClient(bootstrap_servers=kafka.bootstrap))
    yield clients
    for client in clients:
        client.close()


def produce(bootstrap: str, topic: str) -> dict[int, list[tuple[int, str]]]:
    """EVENTS interactions keyed by user; per partition, each one's (offset, event_id)."""
    producer = KafkaProducer(**producer_config(bootstrap, client_id="consumer-loop-test"))
    sent: dict[int, list[tuple[int, str]]] = {}
    try:
        for n in range(EVENTS):
            event = interaction_pb2.Interaction(event_id=f"e{n}", user_id=f"u{n % 7}",
                                                item_id=f"i{n}")
            acked = producer.send(topic, key=event.user_id.encode(),
                                  value=event.SerializeToString()).get(timeout=10)
            sent.setdefault(acked.partition, []).append((acked.offset, event.event_id))
    finally:
        producer.close()
    return sent


def first_offsets(calls: list[Call]) -> dict[int, int]:
    """Per partition, the first offset the handler got in `calls`."""
    first: dict[int, int] = {}
    for records, _ in calls:
        for partition, offset, _ in records:
            first.setdefault(partition, offset)
    return first


def test_a_handler_that_fails_once_sees_every_record_in_order_and_commits_after(
        kafka: TansuBroker, admins: tuple[KafkaAdminClient, KafkaAdminClient]) -> None:
    admin, loop_admin = admins
    topic = group = f"consumer-loop-{uuid.uuid4().hex[:8]}"
    admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
    sent = produce(kafka.bootstrap, topic)
    end = {partition: records[-1][0] + 1 for partition, records in sent.items()}

    def committed(client: KafkaAdminClient = admin) -> dict[int, int]:
        """The group's committed offsets, as any other client of the broker reads them."""
        offsets = client.list_group_offsets(group)[group]
        return {tp.partition: meta.offset for tp, meta in offsets.items()
                if tp.topic == topic and meta.offset >= 0}

    calls: list[Call] = []

    def handler(batch: Batch[interaction_pb2.Interaction]) -> None:
        records = [(r.partition, r.offset, r.message.event_id if r.message else "")
                   for r in batch.records]
        calls.append((records, committed(loop_admin)))
        if len(calls) == 1:
            raise RuntimeError("the first batch fails once")

    errors: list[Exception] = []
    loop = ConsumerLoop(
        Subscription(bootstrap=kafka.bootstrap, topic=topic, group_id=group, name=group,
                     max_records=20),
        handler, on_error=errors.append)
    loop.start()
    try:
        eventually(lambda: committed() == end, timeout=60, what="every offset committed")
    finally:
        loop.stop()

    assert [type(e) for e in errors] == [RuntimeError]
    assert calls[0][1] == calls[1][1] == {}  # nothing committed before a handler succeeded
    # Each partition of the failed batch was read again from the batch's first offset ...
    failed, later = first_offsets(calls[:1]), first_offsets(calls[1:])
    assert {partition: later.get(partition) for partition in failed} == failed
    # ... and the group's offsets never passed a record before its handler returned.
    for records, committed_then in calls:
        assert all(committed_then.get(p, 0) <= first for p, first in
                   first_offsets([(records, committed_then)]).items())
    for partition, records in sent.items():
        seen = [(offset, event_id) for call, _ in calls for p, offset, event_id in call
                if p == partition]
        assert list(dict.fromkeys(seen)) == records  # every record, in order, at least once
    assert committed() == end
    assert loop.lag == 0


def interactions(n: int) -> list[bytes]:
    return [interaction_pb2.Interaction(event_id=f"e{i}", user_id="u1",
                                        item_id=f"i{i}").SerializeToString() for i in range(n)]


def send(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = KafkaProducer(**producer_config(bootstrap, client_id="consumer-loop-test"))
    try:
        for value in values:
            producer.send(topic, value=value).get(timeout=10)
    finally:
        producer.close()


@pytest.mark.parametrize("group", ["member", None])
def test_a_loop_started_before_its_topic_exists_does_not_create_it_and_reads_it_once_made(
        kafka: TansuBroker, admins: tuple[KafkaAdminClient, KafkaAdminClient],
        group: str | None) -> None:
    admin, _ = admins
    topic = f"later-{uuid.uuid4().hex[:8]}"
    seen: list[str] = []
    errors: list[Exception] = []
    loop = ConsumerLoop(
        Subscription(bootstrap=kafka.bootstrap, topic=topic, group_id=group and topic,
                     name=topic),
        lambda batch: seen.extend(r.message.event_id for r in batch.records if r.message),
        on_error=errors.append)
    loop.start()
    try:
        if group is None:  # a follower: nothing to read is having read everything
            eventually(lambda: loop.caught_up, timeout=30, what="caught up with no topic")
        eventually(lambda: topic not in admin.list_topics(), timeout=10, what="no topic")
        admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
        send(kafka.bootstrap, topic, interactions(3))
        eventually(lambda: sorted(seen) == ["e0", "e1", "e2"], timeout=60,
                   what="the records of the topic made later")
    finally:
        loop.stop()
    assert errors == []  # a topic not made yet is no failure


def test_librdkafka_logs_and_errors_go_to_logging_and_on_error_not_to_stderr(
        capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    bootstrap = f"127.0.0.1:{free_port()}"  # nothing listens there
    errors: list[Exception] = []
    loop = ConsumerLoop(Subscription(bootstrap=bootstrap, topic="t", group_id="g", name="down"),
                        lambda batch: None, on_error=errors.append)
    loop.start()
    try:
        eventually(lambda: errors, timeout=30, what="the unreachable broker reported")
        eventually(lambda: any(r.name == "services.core.kafka.librdkafka"
                               for r in caplog.records), timeout=30,
                   what="librdkafka's log line about the failed connection")
    finally:
        loop.stop()
    assert all(isinstance(e, KafkaException) for e in errors)
    assert capfd.readouterr().err == ""
    warned = [r for r in caplog.records
              if r.name == "services.core.consumer" and r.levelno >= logging.WARNING]
    assert len(warned) == 1  # once, however often librdkafka reported it
