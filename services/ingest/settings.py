"""IngestService settings: the broker, the topic it creates, and the validation limits."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from services.core.config import KafkaSettings, ServerSettings
from services.core.contract import MIN_OCCURRED_AT
from services.core.settings import SettingsError, at_least_one, env, positive

#: Upper bound of RECSYS_INGEST_MAX_BATCH: a failure detail lists up to this many event
#: positions (<= 5 bytes each), and clients reject trailers over 8 KiB by default.
MAX_BATCH_LIMIT = 1000


def _iso_instant(value: str) -> bool:
    try:
        return datetime.fromisoformat(value).tzinfo is not None
    except ValueError:
        return False


@dataclass(frozen=True, kw_only=True)
class IngestSettings(ServerSettings, KafkaSettings):
    topic_partitions: int = env(
        "RECSYS_INGEST_TOPIC_PARTITIONS", 3,
        "Partitions of the topic when ingest creates it (an existing topic is left as is).",
        check=at_least_one, rule=">= 1")
    topic_replication: int = env(
        "RECSYS_INGEST_TOPIC_REPLICATION", 1,
        "Replication factor of the topic when ingest creates it.",
        check=at_least_one, rule=">= 1")
    max_batch: int = env(
        "RECSYS_INGEST_MAX_BATCH", MAX_BATCH_LIMIT,
        "Most events in one BatchCreateInteractions request or one stream message. A stream "
        "also keeps at most this many events awaiting the broker's acknowledgement, so a "
        "failure's list of unpublished events fits gRPC's default 8 KiB trailer limit.",
        check=lambda v: 1 <= v <= MAX_BATCH_LIMIT, rule=f"1 to {MAX_BATCH_LIMIT:,}")
    ack_timeout_s: float = env(
        "RECSYS_INGEST_ACK_TIMEOUT_S", 10.0,
        "Longest wait for the broker to acknowledge a batch of events (a sooner client "
        "deadline wins); past it the RPC fails UNAVAILABLE.",
        check=positive, rule="> 0")
    health_interval_s: float = env(
        "RECSYS_INGEST_HEALTH_INTERVAL_S", 1.0,
        "Seconds between broker reachability checks (health SERVING/NOT_SERVING).",
        check=positive, rule="> 0")
    rating_min: float = env("RECSYS_INGEST_RATING_MIN", 0.5,
                            "Smallest value a rating event may carry.")
    rating_max: float = env("RECSYS_INGEST_RATING_MAX", 5.0,
                            "Largest value a rating event may carry.")
    max_weight: float = env("RECSYS_INGEST_MAX_WEIGHT", 1e6,
                            "Largest value (weight) a non-rating event may carry.",
                            check=positive, rule="> 0")
    max_future_s: float = env(
        "RECSYS_INGEST_MAX_FUTURE_S", 300.0,
        "How far ahead of the server's clock occurred_at may be (clock skew allowance).",
        check=lambda v: v >= 0, rule=">= 0")
    min_occurred_at: str = env(
        "RECSYS_INGEST_MIN_OCCURRED_AT", MIN_OCCURRED_AT.isoformat(),
        "Earliest occurred_at accepted, ISO 8601 with a UTC offset.",
        check=_iso_instant, rule="an ISO 8601 instant with a UTC offset")

    def __post_init__(self) -> None:
        if not self.rating_min <= self.rating_max:
            raise SettingsError(
                f"RECSYS_INGEST_RATING_MIN={self.rating_min!r} is above "
                f"RECSYS_INGEST_RATING_MAX={self.rating_max!r}")
