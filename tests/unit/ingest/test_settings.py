from __future__ import annotations

import pytest

from services.core.settings import SettingsError, describe, load
from services.ingest.settings import IngestSettings

PREFIX = "RECSYS_INGEST_"


def test_defaults() -> None:
    settings = load(IngestSettings, {}, prefix=PREFIX)
    assert (settings.kafka_bootstrap, settings.kafka_topic) == ("127.0.0.1:9092", "interactions")
    assert (settings.topic_partitions, settings.topic_replication) == (3, 1)
    assert (settings.max_batch, settings.ack_timeout_s) == (1000, 10.0)
    assert (settings.rating_min, settings.rating_max) == (0.5, 5.0)
    assert settings.min_occurred_at == "1995-01-01T00:00:00+00:00"


def test_values_come_from_the_environment() -> None:
    settings = load(IngestSettings, {
        "RECSYS_KAFKA_BOOTSTRAP": "kafka:9092", "RECSYS_KAFKA_TOPIC": "events",
        "RECSYS_INGEST_TOPIC_PARTITIONS": "12", "RECSYS_INGEST_MAX_BATCH": "500",
        "RECSYS_INGEST_RATING_MAX": "10", "RECSYS_INGEST_MIN_OCCURRED_AT": "2020-01-01T00:00Z",
    }, prefix=PREFIX)
    assert (settings.kafka_bootstrap, settings.kafka_topic) == ("kafka:9092", "events")
    assert (settings.topic_partitions, settings.max_batch, settings.rating_max) == (12, 500, 10)


@pytest.mark.parametrize(("environ", "message"), [
    ({"RECSYS_INGEST_MAX_BATCH": "1001"}, "RECSYS_INGEST_MAX_BATCH=1001: must be 1 to 1,000"),
    ({"RECSYS_INGEST_TOPIC_PARTITIONS": "0"}, "RECSYS_INGEST_TOPIC_PARTITIONS=0: must be >= 1"),
    ({"RECSYS_INGEST_ACK_TIMEOUT_S": "0"}, "RECSYS_INGEST_ACK_TIMEOUT_S=0.0: must be > 0"),
    ({"RECSYS_INGEST_MIN_OCCURRED_AT": "2020-01-01"}, "must be an ISO 8601 instant"),
    ({"RECSYS_INGEST_RATING_MIN": "3", "RECSYS_INGEST_RATING_MAX": "2"},
     "RECSYS_INGEST_RATING_MIN=3.0 is above RECSYS_INGEST_RATING_MAX=2.0"),
    ({"RECSYS_INGEST_TOPIC": "x"}, "unknown setting RECSYS_INGEST_TOPIC"),
])
def test_bad_settings_are_refused_with_one_line(environ: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load(IngestSettings, environ, prefix=PREFIX)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_every_setting_is_documented() -> None:
    rows = describe(IngestSettings)
    names = [name for name, _, _ in rows]
    assert len(names) == len(set(names))
    assert {"RECSYS_KAFKA_BOOTSTRAP", "RECSYS_INGEST_MAX_BATCH"} <= set(names)
    ours = [doc for name, _, doc in rows if name.startswith(("RECSYS_INGEST_", "RECSYS_KAFKA_"))]
    assert ours and all(len(doc) > 20 and doc.endswith(".") for doc in ours)
