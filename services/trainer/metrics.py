"""The trainer's domain metrics, registered on the injected registry."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Training runs take seconds on MovieLens-100k and minutes on large data.
JOB_DURATION_BUCKETS = (1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
                        3600.0)


@dataclass(frozen=True)
class TrainerMetrics:
    jobs: Counter
    job_duration_seconds: Histogram
    last_metric: Gauge
    events_consumed: Counter
    consumer_lag: Gauge
    consumer_errors: Counter
    catalog_errors: Counter
    erasures: Counter
    dataset_rows: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry) -> TrainerMetrics:
        return cls(
            jobs=Counter(
                "recsys_trainer_jobs_total",
                "Training jobs ended, by outcome (succeeded, failed, cancelled).",
                ("outcome",), registry=registry,
            ),
            job_duration_seconds=Histogram(
                "recsys_trainer_job_duration_seconds",
                "Seconds from a training job's start to its end, whatever the outcome.",
                buckets=JOB_DURATION_BUCKETS, registry=registry,
            ),
            last_metric=Gauge(
                "recsys_trainer_last_metric",
                "Held-out evaluation of the last successful job (e.g. metric=\"ndcg_at_10\").",
                ("metric",), registry=registry,
            ),
            events_consumed=Counter(
                "recsys_trainer_events_consumed_total",
                "Events read from Kafka, by result: stored, duplicate (event_id already "
                "stored) or invalid (cannot be decoded or trained on).",
                ("result",), registry=registry,
            ),
            consumer_lag=Gauge(
                "recsys_trainer_consumer_lag",
                "Events in the topic not yet consumed (high watermark minus position, summed "
                "over the assigned partitions).",
                registry=registry,
            ),
            consumer_errors=Counter(
                "recsys_trainer_consumer_errors_total",
                "Failed consumer attempts (Kafka, the dataset store, a commit); each batch is "
                "read again after a backoff until it is stored and committed.",
                registry=registry,
            ),
            catalog_errors=Counter(
                "recsys_trainer_catalog_errors_total",
                "Failed attempts of the catalogue follower (Kafka, the dataset store, an erasure "
                "waiting for the events it covers); each batch is read again after a backoff.",
                registry=registry,
            ),
            erasures=Counter(
                "recsys_trainer_erasures_total",
                "Users' erasures applied to the dataset since the process started (a restart "
                "applies the topic's erasures again; each deletes only what is left).",
                registry=registry,
            ),
            dataset_rows=Gauge(
                "recsys_trainer_dataset_rows", "Distinct events in the dataset store.",
                registry=registry,
            ),
        )
