"""Each user's recent interactions, from the interactions topic into Redis.

A core consumer loop of group "recommender-history" (shared by all replicas, so each event is
written once) hands each batch to `HistoryRecorder`, which pushes every event's item onto the
user's bounded recent list, bumps the user's cache generation (their cached answers become
misses) and publishes the users it touched so every replica drops their answers from its
in-process tier. Offsets are committed only after Redis took the batch; a Redis error is a
handler error like any other: counted, and the batch retried, so nothing is skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from recsys.events.v1 import interaction_pb2
from services.core.consumer import Backoff, Batch, ConsumerLoop, Record, Subscription
from services.recommender.cache import INVALIDATION_CHANNEL, Keys
from services.recommender.metrics import RecommenderMetrics
from services.recommender.settings import RecommenderSettings

log = logging.getLogger(__name__)

GROUP_ID = "recommender-history"
_POLL_TIMEOUT_MS = 200
_FETCH_MAX_WAIT_MS = 50  # how long the broker may hold a fetch: part of the 1 s freshness budget
_MAX_RECORDS = 1000
# Retries stay short: once Redis is back, fresh interactions should be within seconds again.
_BACKOFF = Backoff(first_s=0.5, longest_s=5.0)
_REDIS_FAILURES = (redis.RedisError, OSError)


class HistoryWriter:
    """Applies (user, item) events to Redis in one pipeline per batch."""

    def __init__(self, client: redis.Redis, *, history_size: int, ttl_s: int) -> None:
        self._client = client
        self._history_size = history_size
        self._ttl_s = ttl_s

    @classmethod
    def connect(cls, url: str, *, history_size: int, ttl_s: int,
                timeout_s: float = 2.0) -> HistoryWriter:
        client = redis.Redis.from_url(url, socket_timeout=timeout_s,
                                      socket_connect_timeout=timeout_s,
                                      retry=Retry(NoBackoff(), 0))
        return cls(client, history_size=history_size, ttl_s=ttl_s)

    def record(self, events: Sequence[tuple[str, str]]) -> None:
        """Push each event's item (in order: the newest ends up first) and invalidate users."""
        users = dict.fromkeys(user for user, _ in events)
        pipe = self._client.pipeline(transaction=False)
        for user, item in events:
            pipe.lpush(Keys.history(user), item)
        for user in users:
            pipe.ltrim(Keys.history(user), 0, self._history_size - 1)
            pipe.expire(Keys.history(user), self._ttl_s)
            pipe.incr(Keys.generation(user))
            pipe.expire(Keys.generation(user), self._ttl_s)
        pipe.publish(INVALIDATION_CHANNEL, "\n".join(users))
        pipe.execute()

    def close(self) -> None:
        self._client.close()


def user_item(record: Record[interaction_pb2.Interaction]) -> tuple[str, str] | None:
    """(user_id, item_id) of a record's Interaction, or None if it is not one."""
    event = record.message
    if event is None or not event.user_id or not event.item_id:
        return None
    return event.user_id, event.item_id


#: Whether a user's event at (partition, offset) is covered by their erasure.
Erased = Callable[[str, int, int], bool]


class HistoryRecorder:
    """The loop's handler: a batch's (user, item) events into Redis in one pipeline, without
    the events that an erasure covers."""

    def __init__(self, writer: HistoryWriter, metrics: RecommenderMetrics, *,
                 erased: Erased = lambda user, partition, offset: False) -> None:
        self._writer = writer
        self._metrics = metrics
        self._erased = erased

    def __call__(self, batch: Batch[interaction_pb2.Interaction]) -> None:
        events = []
        for record in batch.records:
            event = user_item(record)
            if event is None:
                log.warning("skipping a record that is not an Interaction",
                            extra={"partition": record.partition, "offset": record.offset})
            elif not self._erased(event[0], record.partition, record.offset):
                events.append(event)
        if events:
            self._writer.record(events)
        self._metrics.history_events.inc(len(events))


def history_consumer(writer: HistoryWriter, metrics: RecommenderMetrics,
                     settings: RecommenderSettings, *,
                     erased: Erased = lambda user, partition, offset: False,
                     ) -> ConsumerLoop[interaction_pb2.Interaction]:
    """The history's consumer loop (not started); its failures on `metrics`, Redis' also as
    redis_errors{operation="history"} (with the request path's Redis errors)."""

    def count(exc: Exception) -> None:
        metrics.history_errors.inc()
        if isinstance(exc, _REDIS_FAILURES):
            metrics.redis_errors.labels("history").inc()

    return ConsumerLoop(
        Subscription(bootstrap=settings.kafka_bootstrap, topic=settings.kafka_topic,
                     group_id=GROUP_ID, name=GROUP_ID, security=settings.kafka_security(),
                     max_records=_MAX_RECORDS,
                     poll_timeout_ms=_POLL_TIMEOUT_MS, fetch_max_wait_ms=_FETCH_MAX_WAIT_MS),
        HistoryRecorder(writer, metrics, erased=erased),
        on_error=count, outages=_REDIS_FAILURES, backoff=_BACKOFF,
    )
