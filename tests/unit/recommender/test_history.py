"""Reading Interaction records off the topic into the recent history."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import redis
from prometheus_client import CollectorRegistry

from recsys.events.v1 import interaction_pb2
from services.core import consumer as consumer_module
from services.core.consumer import Record, decode
from services.recommender.history import HistoryWriter, history_consumer, user_item
from services.recommender.metrics import RecommenderMetrics
from services.recommender.settings import RecommenderSettings
from tests.support.fake_kafka import FakeBroker, expect_committed


def parse(value: bytes | None) -> tuple[str, str] | None:
    """(user, item) of a record with this value, decoded as the consumer loop does."""
    return user_item(Record(0, 0, decode(interaction_pb2.Interaction, value)))


def test_an_interaction_gives_its_user_and_item() -> None:
    event = interaction_pb2.Interaction(user_id="u1", item_id="i9",
                                        type=interaction_pb2.INTERACTION_TYPE_CLICK)
    assert parse(event.SerializeToString()) == ("u1", "i9")


def test_records_that_are_not_interactions_are_skipped() -> None:
    assert parse(b"\xff\xff not protobuf") is None
    assert parse(None) is None
    assert parse(interaction_pb2.Interaction(user_id="u1").SerializeToString()) is None


class FlakyWriter(HistoryWriter):
    """Raises a Redis error for its first `failures` batches, then keeps what it is given."""

    def __init__(self, failures: int) -> None:
        super().__init__(redis.Redis(), history_size=10, ttl_s=60)  # never connects
        self.failures = failures
        self.batches: list[list[tuple[str, str]]] = []

    def record(self, events: Sequence[tuple[str, str]]) -> None:
        self.batches.append(list(events))
        if len(self.batches) <= self.failures:
            raise redis.ConnectionError("Redis is down")


def test_a_redis_error_is_counted_and_the_batch_written_again(
        monkeypatch: pytest.MonkeyPatch) -> None:
    broker = FakeBroker("interactions")
    monkeypatch.setattr(consumer_module, "Consumer", broker)
    registry = CollectorRegistry()
    writer = FlakyWriter(failures=1)
    loop = history_consumer(writer, RecommenderMetrics.create(registry),
                            RecommenderSettings(kafka_topic="interactions"))
    event = interaction_pb2.Interaction(user_id="u1", item_id="i9")
    broker.produce(0, event.SerializeToString(), b"\xff\xff not protobuf")
    loop.start()
    try:
        expect_committed(broker, {0: 2})
    finally:
        loop.stop()
    assert writer.batches == [[("u1", "i9")]] * 2
    assert registry.get_sample_value("recsys_recommender_redis_errors_total",
                                     {"operation": "history"}) == 1
    assert registry.get_sample_value("recsys_recommender_history_errors_total") == 1
    assert registry.get_sample_value("recsys_recommender_history_events_total") == 1
    # The freshness budget: the broker answers a fetch within 50 ms, 1000 records at most.
    consumer = broker.consumers[0]
    assert (consumer.options["fetch.wait.max.ms"], consumer.num_messages[0]) == (50, 1000)
