"""Each user's recent interactions, from the interactions topic into Redis.

A consumer thread of group "recommender-history" (shared by all replicas, so each event is
written once) pushes every event's item onto the user's bounded recent list, bumps the user's
cache generation (their cached answers become misses) and publishes the users it touched so
every replica drops their answers from its in-process tier. Offsets are committed only after
Redis took the batch; when Redis is down the batch is retried, so nothing is skipped.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

import redis
from google.protobuf.message import DecodeError
from kafka import KafkaConsumer
from kafka.errors import CommitFailedError, KafkaError
from redis.backoff import NoBackoff
from redis.retry import Retry

from recsys.events.v1 import interaction_pb2
from services.core.kafka import PLAINTEXT, KafkaSecurity, consumer_config
from services.recommender.cache import INVALIDATION_CHANNEL, Keys
from services.recommender.metrics import RecommenderMetrics

log = logging.getLogger(__name__)

GROUP_ID = "recommender-history"
_POLL_TIMEOUT_MS = 200
_FETCH_MAX_WAIT_MS = 50  # how long the broker may hold a fetch: part of the 1 s freshness budget
_MAX_RECORDS = 1000


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


def parse(value: bytes | None) -> tuple[str, str] | None:
    """(user_id, item_id) of an Interaction record, or None if it is not one."""
    try:
        event = interaction_pb2.Interaction.FromString(value or b"")
    except DecodeError:
        return None
    if not event.user_id or not event.item_id:
        return None
    return event.user_id, event.item_id


class HistoryConsumer:
    """The consumer thread; `start()` returns at once, `stop()` joins it."""

    def __init__(self, *, bootstrap: str, topic: str, writer: HistoryWriter,
                 metrics: RecommenderMetrics, retry_s: float = 1.0,
                 security: KafkaSecurity = PLAINTEXT) -> None:
        self._bootstrap = bootstrap
        self._security = security
        self._topic = topic
        self._writer = writer
        self._metrics = metrics
        self._retry_s = retry_s
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="recommender-history",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._writer.close()

    def _run(self) -> None:
        consumer: KafkaConsumer | None = None
        while not self._stopping.is_set():
            try:
                if consumer is None:
                    consumer = KafkaConsumer(
                        self._topic,
                        **consumer_config(self._bootstrap, group_id=GROUP_ID,
                                          client_id=GROUP_ID, security=self._security),
                        fetch_max_wait_ms=_FETCH_MAX_WAIT_MS,
                    )
                self._poll_once(consumer)
            except KafkaError as exc:
                log.warning("history consumer failed; reconnecting",
                            extra={"error": repr(exc), "bootstrap": self._bootstrap})
                if consumer is not None:
                    consumer.close(autocommit=False)
                    consumer = None
                self._stopping.wait(self._retry_s)
        if consumer is not None:
            consumer.close(autocommit=False)

    def _poll_once(self, consumer: KafkaConsumer) -> None:
        batches = consumer.poll(timeout_ms=_POLL_TIMEOUT_MS, max_records=_MAX_RECORDS)
        if not batches:
            return
        events = []
        for records in batches.values():
            for record in records:
                event = parse(record.value)
                if event is None:
                    log.warning("skipping a record that is not an Interaction",
                                extra={"partition": record.partition, "offset": record.offset})
                else:
                    events.append(event)
        try:
            if events:
                self._writer.record(events)
        except (redis.RedisError, OSError) as exc:
            self._metrics.redis_errors.labels("history").inc()
            log.warning("redis failed; retrying the history batch", extra={"error": repr(exc)})
            for partition, records in batches.items():
                consumer.seek(partition, records[0].offset)
            self._stopping.wait(self._retry_s)
            return
        self._metrics.history_events.inc(len(events))
        try:
            consumer.commit()
        except CommitFailedError:  # the partitions moved; their new owner rewrites the events
            log.info("history offsets not committed after a rebalance")
