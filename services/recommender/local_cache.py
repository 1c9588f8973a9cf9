"""In-process tiers (answers, and users' recent histories) in front of Redis, kept coherent by
Redis pub/sub.

The history consumer publishes the users it touched on `INVALIDATION_CHANNEL`; every replica
drops those users' answers and histories. Messages can be missed only while the subscription
is down, so the tiers are cleared and bypassed until it is back. Eviction is least-recently-
used, within a TTL.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Generic, TypeVar

from redis.asyncio.client import PubSub
from redis.exceptions import ConnectionError as RedisConnectionError

from services.recommender.cache import INVALIDATION_CHANNEL, REDIS_ERRORS, connect
from services.recommender.metrics import RecommenderMetrics

log = logging.getLogger(__name__)

_PING_INTERVAL_S = 2.0

V = TypeVar("V")


class LocalAnswers(Generic[V]):
    """A bounded LRU of answers by (user, request), valid only while `coherent`.

    `coherent` is set by whoever follows the invalidation messages; until then nothing is kept.
    `put` takes the `epoch()` read before the answer was looked up, so an answer computed while
    an invalidation arrived is not stored.
    """

    def __init__(self, capacity: int, ttl_s: float, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._capacity = capacity
        self._ttl_s = ttl_s
        self._clock = clock
        self._entries: OrderedDict[tuple[str, str], tuple[float, V]] = OrderedDict()
        self._by_user: dict[str, set[str]] = {}
        self._epoch = 0
        self._coherent = False

    @property
    def coherent(self) -> bool:
        return self._coherent

    @coherent.setter
    def coherent(self, value: bool) -> None:
        self.clear()
        self._coherent = value

    def __len__(self) -> int:
        return len(self._entries)

    def epoch(self) -> int:
        return self._epoch

    def get(self, user_id: str, request: str) -> V | None:
        key = (user_id, request)
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] < self._clock():
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return entry[1]

    def put(self, user_id: str, request: str, value: V, *, epoch: int) -> None:
        if not self._coherent or self._capacity == 0 or epoch != self._epoch:
            return
        key = (user_id, request)
        self._entries[key] = (self._clock() + self._ttl_s, value)
        self._entries.move_to_end(key)
        self._by_user.setdefault(user_id, set()).add(request)
        while len(self._entries) > self._capacity:
            self._drop(next(iter(self._entries)))

    def invalidate(self, user_ids: Iterable[str]) -> None:
        self._epoch += 1
        for user_id in user_ids:
            for request in self._by_user.pop(user_id, ()):
                del self._entries[(user_id, request)]

    def clear(self) -> None:
        self._epoch += 1
        self._entries.clear()
        self._by_user.clear()

    def _drop(self, key: tuple[str, str]) -> None:
        del self._entries[key]
        user_id, request = key
        requests = self._by_user[user_id]
        requests.discard(request)
        if not requests:
            del self._by_user[user_id]


async def follow_invalidations(url: str, tiers: Sequence[LocalAnswers[Any]], *, retry_s: float,
                               metrics: RecommenderMetrics) -> None:
    """Keep every tier of `tiers` coherent with Redis until cancelled.

    A tier is coherent only while subscribed: it is cleared and switched off whenever the
    subscription drops (messages may have been missed) and on again once resubscribed.
    """
    client = connect(url, timeout_s=None)
    try:
        while True:
            try:
                async with client.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(INVALIDATION_CHANNEL)
                    _set_coherent(tiers, True)
                    await _listen(pubsub, tiers)
            except REDIS_ERRORS as exc:
                if any(tier.coherent for tier in tiers):
                    log.warning("invalidation subscription lost; in-process cache off",
                                extra={"error": repr(exc)})
                _set_coherent(tiers, False)
                metrics.redis_errors.labels("subscribe").inc()
                await asyncio.sleep(retry_s)
    finally:
        _set_coherent(tiers, False)
        await client.aclose()


def _set_coherent(tiers: Sequence[LocalAnswers[Any]], coherent: bool) -> None:
    for tier in tiers:
        tier.coherent = coherent


async def _listen(pubsub: PubSub, tiers: Sequence[LocalAnswers[Any]]) -> None:
    """Apply invalidation messages; PING when idle, and give up on a silent connection."""
    loop = asyncio.get_running_loop()
    heard = loop.time()
    while True:
        message = await pubsub.get_message(timeout=_PING_INTERVAL_S)
        now = loop.time()
        if message is not None:
            heard = now
            if message["type"] == "message":
                users = message["data"].decode().split("\n")
                for tier in tiers:
                    tier.invalidate(users)
        elif now - heard >= 2 * _PING_INTERVAL_S:
            raise RedisConnectionError("no reply to PING on the invalidation subscription")
        else:
            await pubsub.ping()
