"""The recommender's domain metrics, registered on the injected registry."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

# Scoring is tens of µs for a MovieLens-size catalogue and milliseconds for 100k+ items.
SCORING_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
)


@dataclass(frozen=True)
class RecommenderMetrics:
    cache_requests: Counter
    scoring_seconds: Histogram
    strategy: Counter
    model: Info
    index_recall: Gauge
    index_scanned: Gauge
    top_lists: Gauge
    model_swaps: Counter
    model_load_failures: Counter
    models_refused: Counter
    redis_errors: Counter
    history_events: Counter
    history_errors: Counter
    catalog_errors: Counter
    erasures: Counter
    catalog_items: Gauge
    catalog_blocked: Gauge
    catalog_cold_start: Gauge
    filtered: Counter
    cold_start_answers: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> RecommenderMetrics:
        return cls(
            cache_requests=Counter(
                "recsys_recommender_cache_requests_total",
                "Recommend requests by cache outcome: hit (tier local or redis), miss (tier "
                "local: answered from a top list with the history held in process, no Redis "
                "call; tier redis: after a Redis lookup), or error (served without the cache).",
                ("result", "tier"), registry=registry,
            ),
            scoring_seconds=Histogram(
                "recsys_recommender_scoring_seconds",
                "Time to score and rank the catalogue for a request, in seconds: the duration "
                "of the batch of concurrent requests it was scored with.",
                ("rpc",), buckets=SCORING_BUCKETS, registry=registry,
            ),
            strategy=Counter(
                "recsys_recommender_strategy_total",
                "Recommend answers by strategy (personalized, fold_in, popularity, "
                "label_popularity).",
                ("strategy",), registry=registry,
            ),
            model=Info(
                "recsys_recommender_model",
                "The model version being served.", registry=registry,
            ),
            index_recall=Gauge(
                "recsys_recommender_index_recall",
                "Recall@10 of the served version's item index against exact scoring, measured "
                "on a sample of its users when it loaded; 1 when scoring is exact.",
                registry=registry,
            ),
            index_scanned=Gauge(
                "recsys_recommender_index_scanned_ratio",
                "Share of the catalogue scored per Recommend query: below 1 when the item "
                "index serves the version.",
                registry=registry,
            ),
            top_lists=Gauge(
                "recsys_recommender_top_lists",
                "1 when the served version's known users have top lists ranked at load (their "
                "default Recommend answers cost no scoring), else 0.",
                registry=registry,
            ),
            model_swaps=Counter(
                "recsys_recommender_model_swaps_total",
                "Model versions loaded and swapped in (the first load included).",
                registry=registry,
            ),
            model_load_failures=Counter(
                "recsys_recommender_model_load_failures_total",
                "Failed alias lookups or model loads (MLflow unreachable, bad artifact).",
                registry=registry,
            ),
            models_refused=Counter(
                "recsys_recommender_models_refused_total",
                "Model versions not served because their artifact was refused: reason "
                "checksum (not the file the trainer registered) or invalid (not a valid "
                "model, e.g. indices out of range). The previous version keeps serving.",
                ("reason",), registry=registry,
            ),
            redis_errors=Counter(
                "recsys_recommender_redis_errors_total",
                "Redis calls that failed or timed out, by operation.",
                ("operation",), registry=registry,
            ),
            history_events=Counter(
                "recsys_recommender_history_events_total",
                "Interaction events written to the per-user recent history.",
                registry=registry,
            ),
            history_errors=Counter(
                "recsys_recommender_history_errors_total",
                "Failed attempts of the history consumer (Kafka, Redis, a commit); each batch "
                "is read again after a backoff until Redis took it.",
                registry=registry,
            ),
            catalog_errors=Counter(
                "recsys_recommender_catalog_errors_total",
                "Failed attempts of the catalogue follower (Kafka, a record it could not fold "
                "in); each batch is read again after a backoff.",
                registry=registry,
            ),
            catalog_items=Gauge(
                "recsys_recommender_catalog_items",
                "Items in the catalogue this replica has read (deleted ones not counted).",
                registry=registry,
            ),
            catalog_blocked=Gauge(
                "recsys_recommender_catalog_blocked_items",
                "Catalogue items never recommended now: hidden, or outside their availability "
                "window.",
                registry=registry,
            ),
            catalog_cold_start=Gauge(
                "recsys_recommender_catalog_cold_start_items",
                "Catalogue items the served version does not know, recommended through their "
                "labels and categories.",
                registry=registry,
            ),
            filtered=Counter(
                "recsys_recommender_filtered_requests_total",
                "Recommend and SimilarItems requests with a category filter, by RPC.",
                ("rpc",), registry=registry,
            ),
            cold_start_answers=Counter(
                "recsys_recommender_cold_start_answers_total",
                "Answers that hold at least one item the served version does not know "
                "(cold start from labels and categories).",
                registry=registry,
            ),
            erasures=Counter(
                "recsys_recommender_erasures_total",
                "Users whose recent history and cached answers this replica erased from Redis "
                "(each replica following the catalogue live counts the same erasures).",
                registry=registry,
            ),
        )
