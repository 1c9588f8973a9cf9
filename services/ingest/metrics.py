"""IngestService's domain metrics, registered on the server's injected registry."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from services.core.metrics import LATENCY_BUCKETS

BATCH_SIZE_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000)

ACCEPTED = "accepted"
REJECTED = "rejected"
FAILED = "failed"


@dataclass(frozen=True)
class IngestMetrics:
    events: Counter
    batch_size: Histogram
    ack_seconds: Histogram
    broker_up: Gauge
    catalog_changes: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> IngestMetrics:
        return cls(
            events=Counter(
                "recsys_ingest_events_total",
                "Events by outcome: accepted (acknowledged by the broker), rejected (invalid; "
                "reason is the offending field) or failed (valid but not acknowledged; reason "
                "is unavailable or deadline_exceeded).",
                ("outcome", "reason"), registry=registry,
            ),
            batch_size=Histogram(
                "recsys_ingest_batch_size",
                "Events per request (a stream counts each chunk).",
                buckets=BATCH_SIZE_BUCKETS, registry=registry,
            ),
            ack_seconds=Histogram(
                "recsys_ingest_ack_seconds",
                "Time from handing a batch to the producer until the broker acknowledged "
                "all of it, in seconds.",
                buckets=LATENCY_BUCKETS, registry=registry,
            ),
            broker_up=Gauge(
                "recsys_ingest_broker_up",
                "1 while the Kafka broker answers and the topic exists (health SERVING), "
                "else 0.",
                registry=registry,
            ),
            catalog_changes=Counter(
                "recsys_ingest_catalog_changes_total",
                "Catalogue changes by kind (item, hide, unhide, delete, user, erasure) and "
                "outcome: accepted (acknowledged by the broker), rejected (invalid) or failed "
                "(not acknowledged).",
                ("change", "outcome"), registry=registry,
            ),
        )
