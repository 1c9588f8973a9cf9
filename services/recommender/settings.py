"""RecommenderService settings: where the model, the cache and the event stream live."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlencode

from services.core.config import KafkaSettings, MlflowSettings, ServerSettings, secret
from services.core.settings import SettingsError, at_least_one, env, non_negative, positive


def _fraction(value: float) -> bool:
    return 0 < value <= 1


def _redis_url(value: str) -> bool:
    return value.startswith(("redis://", "rediss://", "unix://"))


@dataclass(frozen=True, kw_only=True)
class RecommenderSettings(ServerSettings, KafkaSettings, MlflowSettings):
    redis_url: str = secret(env(
        "RECSYS_REDIS_URL", "redis://127.0.0.1:6379/0",
        "Redis for the answer cache and each user's recent interactions: "
        "redis://[:PASSWORD@]HOST:PORT/DB, or rediss:// for TLS. The password (URL-encoded) "
        "comes from a Secret; the URL is never printed.",
        check=_redis_url, rule="a redis://, rediss:// or unix:// URL"))
    redis_tls_ca_file: str = env(
        "RECSYS_REDIS_TLS_CA_FILE", "",
        "PEM CA bundle that signed Redis' certificate, with a rediss:// URL; empty: the "
        "system's CAs.")

    poll_interval_s: float = env(
        "RECSYS_RECOMMENDER_POLL_INTERVAL_S", 2.0,
        "Seconds between lookups of the champion alias; a moved alias is loaded in the "
        "background and swapped in.", check=positive, rule="> 0")
    mlflow_timeout_s: int = env(
        "RECSYS_RECOMMENDER_MLFLOW_TIMEOUT_S", 10,
        "Timeout of each MLflow HTTP request (alias lookup, download).",
        check=at_least_one, rule=">= 1")
    mlflow_retries: int = env(
        "RECSYS_RECOMMENDER_MLFLOW_RETRIES", 0,
        "Retries of a failed MLflow request within one poll; the next poll retries anyway.",
        check=non_negative, rule=">= 0")
    max_k: int = env("RECSYS_RECOMMENDER_MAX_K", 100,
                     "Largest k a request may ask for.", check=at_least_one, rule=">= 1")
    cache_ttl_s: int = env(
        "RECSYS_RECOMMENDER_CACHE_TTL_S", 300,
        "Seconds an answer stays in the cache (answers are also keyed by model version and "
        "dropped when the user interacts).", check=at_least_one, rule=">= 1")
    local_cache_size: int = env(
        "RECSYS_RECOMMENDER_LOCAL_CACHE_SIZE", 10_000,
        "Answers, and as many users' recent histories (a known user's answer from a top "
        "list then needs no Redis call), kept in process in front of Redis, coherent through "
        "Redis invalidation messages; 0 turns the in-process tiers off.", check=non_negative,
        rule=">= 0")
    history_size: int = env(
        "RECSYS_RECOMMENDER_HISTORY_SIZE", 50,
        "Recent interactions kept per user (excluded from recommendations; used to fold in "
        "users the model does not know).", check=at_least_one, rule=">= 1")
    history_ttl_s: int = env(
        "RECSYS_RECOMMENDER_HISTORY_TTL_S", 7 * 24 * 3600,
        "Seconds a user's recent history is kept after their last interaction.",
        check=at_least_one, rule=">= 1")
    history_consumer: bool = env(
        "RECSYS_RECOMMENDER_HISTORY_CONSUMER", True,
        "Run the consumer (group \"recommender-history\") that writes recent interactions to "
        "Redis; off, recommendations use training data only.")
    catalog_consumer: bool = env(
        "RECSYS_RECOMMENDER_CATALOG_CONSUMER", True,
        "Follow the catalogue topic (hidden items, categories, new items, erasures) and report "
        "SERVING only once it has been read to its end; off, every model item may be "
        "recommended and no category is known.")
    redis_timeout_s: float = env(
        "RECSYS_RECOMMENDER_REDIS_TIMEOUT_S", 0.1,
        "Socket timeout of each Redis call on the request path; a slower Redis is skipped.",
        check=positive, rule="> 0")
    redis_cooldown_s: float = env(
        "RECSYS_RECOMMENDER_REDIS_COOLDOWN_S", 1.0,
        "After a Redis error, requests skip Redis for this long before trying it again.",
        check=positive, rule="> 0")
    torch_threads: int = env(
        "RECSYS_RECOMMENDER_TORCH_THREADS", 1,
        "Intra-op threads torch and numpy's BLAS use for scoring (process-wide).",
        check=at_least_one, rule=">= 1")
    scoring_threads: int = env(
        "RECSYS_RECOMMENDER_SCORING_THREADS", 2,
        "Worker threads that score large catalogues off the event loop.",
        check=at_least_one, rule=">= 1")
    offload_min_items: int = env(
        "RECSYS_RECOMMENDER_OFFLOAD_MIN_ITEMS", 20_000,
        "Queries that score at least this many items (the catalogue, or what the item index "
        "probes) are scored on a worker thread; smaller ones on the event loop, where scoring "
        "costs less than the thread hop.",
        check=non_negative, rule=">= 0")
    index_min_items: int = env(
        "RECSYS_RECOMMENDER_INDEX_MIN_ITEMS", 50_000,
        "Catalogues with at least this many items are searched through an approximate item "
        "index (k-means inverted file) instead of scored item by item, when the index reaches "
        "RECSYS_RECOMMENDER_INDEX_TARGET_RECALL; 0: always exact.",
        check=non_negative, rule=">= 0")
    index_target_recall: float = env(
        "RECSYS_RECOMMENDER_INDEX_TARGET_RECALL", 0.95,
        "Share of the exact top-10 the item index must find, measured on 256 of the model's "
        "users each time a version loads; the fewest probes that reach it are used, and an "
        "index that needs more than 10% of the catalogue to reach it is not used at all.",
        check=_fraction, rule="> 0 and <= 1")
    top_lists_max_cells: int = env(
        "RECSYS_RECOMMENDER_TOP_LISTS_MAX_CELLS", 2_500_000_000,
        "Rank every known user's best 128 items exactly when a version loads (answers then "
        "cost no scoring) if users x items is at most this; the ranking takes about 7 s per "
        "10^9 cells with 64 factors on one core. 0 turns the lists off.",
        check=non_negative, rule=">= 0")
    top_lists_max_users: int = env(
        "RECSYS_RECOMMENDER_TOP_LISTS_MAX_USERS", 1_000_000,
        "The top lists (RECSYS_RECOMMENDER_TOP_LISTS_MAX_CELLS) are built only for models with "
        "at most this many users: they take 1 KiB per user.",
        check=non_negative, rule=">= 0")

    def validate(self) -> None:
        super().validate()
        if self.redis_tls_ca_file and not self.redis_url.startswith("rediss://"):
            raise SettingsError("RECSYS_REDIS_TLS_CA_FILE needs a rediss:// RECSYS_REDIS_URL")

    @property
    def redis_connection_url(self) -> str:
        """What Redis clients connect with: RECSYS_REDIS_URL, plus the TLS CA as redis-py's
        ssl_ca_certs parameter (every Redis client here is configured by URL)."""
        if not self.redis_tls_ca_file:
            return self.redis_url
        separator = "&" if "?" in self.redis_url else "?"
        return f"{self.redis_url}{separator}{urlencode({'ssl_ca_certs': self.redis_tls_ca_file})}"
