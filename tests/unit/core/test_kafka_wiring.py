"""The Kafka security settings reach every Kafka client the services make.

The clients are replaced by recorders and fakes (the boundary); the settings themselves are
covered in test_kafka_security.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from kafka.errors import KafkaError
from prometheus_client import CollectorRegistry

from services.core import consumer as consumer_module
from services.core.consumer import ConsumerLoop
from services.core.kafka import KafkaSecurity
from services.ingest import publisher as publisher_module
from services.ingest.publisher import Publisher
from services.recommender.history import history_consumer
from services.recommender.metrics import RecommenderMetrics
from services.recommender.settings import RecommenderSettings
from services.trainer.consumer import dataset_consumer
from services.trainer.metrics import TrainerMetrics
from services.trainer.settings import TrainerSettings
from tests.support.fake_kafka import FakeBroker
from tests.support.polling import eventually

SECURITY = KafkaSecurity(protocol="SASL_PLAINTEXT", sasl_mechanism="SCRAM-SHA-512",
                         sasl_username="recsys",
                         sasl_password="from-a-secret")  # pragma: allowlist secret - a test value
SECURITY_SETTINGS: dict[str, Any] = {
    "kafka_bootstrap": "127.0.0.1:1", "kafka_topic": "t",
    "kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_mechanism": "SCRAM-SHA-512",
    "kafka_sasl_username": "recsys",
    "kafka_sasl_password": "from-a-secret",  # pragma: allowlist secret - a test value
}


class Recorder:
    """Stands in for a kafka-python client class: records its options, then fails."""

    def __init__(self) -> None:
        self.options: list[dict[str, Any]] = []

    def __call__(self, *args: Any, **options: Any) -> Any:
        self.options.append(options)
        raise KafkaError("recorded")


def assert_secured(options: dict[str, Any]) -> None:
    """kafka-python's options (the producers and admin clients)."""
    assert options["security_protocol"] == "SASL_PLAINTEXT"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_username"] == "recsys"


def assert_secured_consumer(config: dict[str, Any]) -> None:
    """librdkafka's properties (the consumers)."""
    assert config["security.protocol"] == "SASL_PLAINTEXT"
    assert config["sasl.mechanism"] == "SCRAM-SHA-512"
    assert config["sasl.username"] == "recsys"


async def test_ingest_admin_client(monkeypatch: pytest.MonkeyPatch) -> None:
    admin = Recorder()
    monkeypatch.setattr(publisher_module, "KafkaAdminClient", admin)
    publisher = Publisher(bootstrap="127.0.0.1:1", topic="t", partitions=1, replication=1,
                          security=SECURITY)
    with pytest.raises(KafkaError):
        await publisher.check()
    assert_secured(admin.options[0])
    await publisher.close()


def connected_options(monkeypatch: pytest.MonkeyPatch, loop: ConsumerLoop[Any]) -> dict[str, Any]:
    """The configuration `loop` gave its Consumer, through the fake broker."""
    broker = FakeBroker("t")
    monkeypatch.setattr(consumer_module, "Consumer", broker)
    loop.start()
    try:
        eventually(lambda: bool(broker.consumers), timeout=10, what="a consumer connected")
    finally:
        loop.stop()
    return broker.consumers[0].options


def test_trainer_consumer(monkeypatch: pytest.MonkeyPatch) -> None:
    loop = dataset_consumer(None, TrainerMetrics.create(CollectorRegistry()),  # type: ignore[arg-type]
                            TrainerSettings(**SECURITY_SETTINGS))
    assert_secured_consumer(connected_options(monkeypatch, loop))


def test_recommender_history_consumer(monkeypatch: pytest.MonkeyPatch) -> None:
    loop = history_consumer(None, RecommenderMetrics.create(CollectorRegistry()),  # type: ignore[arg-type]
                            RecommenderSettings(**SECURITY_SETTINGS))
    assert_secured_consumer(connected_options(monkeypatch, loop))
