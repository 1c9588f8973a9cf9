"""The Kafka security settings reach every Kafka client the services make.

The clients are replaced by recorders (the boundary); the settings themselves are covered in
test_kafka_security.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from kafka.errors import KafkaError
from prometheus_client import CollectorRegistry

from services.core.kafka import KafkaSecurity
from services.ingest import publisher as publisher_module
from services.ingest.publisher import Publisher
from services.recommender import history as history_module
from services.recommender.history import HistoryConsumer
from services.recommender.metrics import RecommenderMetrics
from services.trainer import consumer as consumer_module
from services.trainer.consumer import EventConsumer
from services.trainer.metrics import TrainerMetrics

SECURITY = KafkaSecurity(protocol="SASL_PLAINTEXT", sasl_mechanism="SCRAM-SHA-512",
                         sasl_username="recsys",
                         sasl_password="from-a-secret")  # pragma: allowlist secret - a test value


class Recorder:
    """Stands in for a kafka-python client class: records its options, then fails."""

    def __init__(self, on_create: Any = None) -> None:
        self.options: list[dict[str, Any]] = []
        self._on_create = on_create

    def __call__(self, *args: Any, **options: Any) -> Any:
        self.options.append(options)
        if self._on_create is not None:
            self._on_create()
        raise KafkaError("recorded")


def assert_secured(options: dict[str, Any]) -> None:
    assert options["security_protocol"] == "SASL_PLAINTEXT"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_username"] == "recsys"


async def test_ingest_admin_client(monkeypatch: pytest.MonkeyPatch) -> None:
    admin = Recorder()
    monkeypatch.setattr(publisher_module, "KafkaAdminClient", admin)
    publisher = Publisher(bootstrap="127.0.0.1:1", topic="t", partitions=1, replication=1,
                          security=SECURITY)
    with pytest.raises(KafkaError):
        await publisher.check()
    assert_secured(admin.options[0])
    await publisher.close()


def test_trainer_consumer(monkeypatch: pytest.MonkeyPatch) -> None:
    consumer = EventConsumer(None, TrainerMetrics.create(CollectorRegistry()),  # type: ignore[arg-type]
                             bootstrap="127.0.0.1:1", topic="t", group_id="g", batch=10,
                             security=SECURITY)
    recorder = Recorder(on_create=consumer._stopping.set)
    monkeypatch.setattr(consumer_module, "KafkaConsumer", recorder)
    consumer._run()
    assert_secured(recorder.options[0])


def test_recommender_history_consumer(monkeypatch: pytest.MonkeyPatch) -> None:
    history = HistoryConsumer(bootstrap="127.0.0.1:1", topic="t", writer=None,  # type: ignore[arg-type]
                              metrics=RecommenderMetrics.create(CollectorRegistry()),
                              retry_s=0.01, security=SECURITY)
    recorder = Recorder(on_create=history._stopping.set)
    monkeypatch.setattr(history_module, "KafkaConsumer", recorder)
    history._run()
    assert_secured(recorder.options[0])
