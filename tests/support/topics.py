"""Reading a topic back, independently of the services: what is really on it.

With kafka-python, not the services' consumer client (confluent-kafka), so a test's reading does
not depend on the code under test.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from services.core.kafka import HEARTBEAT_INTERVAL_MS, SESSION_TIMEOUT_MS
from tests.support.polling import eventually


def reader_options(bootstrap: str, *, group_id: str | None) -> dict[str, Any]:
    """A kafka-python consumer that reads from the start and commits nothing by itself."""
    return {"bootstrap_servers": bootstrap, "group_id": group_id,
            "client_id": "recsys-test-reader", "enable_auto_commit": False,
            "auto_offset_reset": "earliest", "session_timeout_ms": SESSION_TIMEOUT_MS,
            "heartbeat_interval_ms": HEARTBEAT_INTERVAL_MS}


def read_topic(bootstrap: str, topic: str, *, idle_s: float = 5.0) -> list[ConsumerRecord]:
    """Every record on `topic`, read from the beginning with a fresh group until each
    partition's position reaches the high watermark its fetch reported (never ListOffsets:
    Tansu answers it wrongly), or until nothing new arrived for `idle_s` (a broker that lost
    a batch in a crash may report a mark it cannot serve)."""
    consumer = KafkaConsumer(**reader_options(bootstrap, group_id=f"test-{uuid.uuid4().hex}"))
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
