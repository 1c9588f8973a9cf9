"""Reading a topic back, independently of the services: what is really on it."""

from __future__ import annotations

import time
import uuid

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from services.core.kafka import consumer_config
from tests.support.polling import eventually


def read_topic(bootstrap: str, topic: str, *, idle_s: float = 5.0) -> list[ConsumerRecord]:
    """Every record on `topic`, read from the beginning with a fresh group until each
    partition's position reaches the high watermark its fetch reported (never ListOffsets:
    Tansu answers it wrongly), or until nothing new arrived for `idle_s` (a broker that lost
    a batch in a crash may report a mark it cannot serve)."""
    consumer = KafkaConsumer(**consumer_config(
        bootstrap, group_id=f"test-{uuid.uuid4().hex}", client_id="test-topic-reader"))
    try:
        partitions = eventually(lambda: consumer.partitions_for_topic(topic), timeout=30,
                                what=f"partitions of topic {topic}")
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        consumer.seek_to_beginning(*assigned)
        records: list[ConsumerRecord] = []
        last_new = time.monotonic()
        while time.monotonic() - last_new < idle_s:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
                last_new = time.monotonic()
            if at_end(consumer):
                break
        return records
    finally:
        consumer.close()


def at_end(consumer: KafkaConsumer) -> bool:
    """Whether every partition assigned to `consumer` has been read up to the high watermark
    of its last fetch: nothing more is on the topic until someone produces again."""
    assigned = consumer.assignment()
    marks = {tp: consumer.highwater(tp) for tp in assigned}
    return bool(assigned) and all(mark is not None and consumer.position(tp) >= mark
                                  for tp, mark in marks.items())
