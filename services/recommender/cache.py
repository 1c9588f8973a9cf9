"""Redis state shared by every replica, and a small coherent tier of answers in process.

Per user, Redis holds (see `Keys`):
- `gen`: a counter the history consumer increments whenever the user interacts;
- `hist`: the user's most recent item ids, newest first, bounded;
- `ans:<request>`: a cached answer, stored as `<gen>:<payload>` with a TTL. `<request>` names
  the model version and every parameter that changes the answer, so a new model version never
  meets an old answer, and an answer whose `gen` is behind the user's counter is a miss: one
  INCR invalidates all of a user's answers.

A request reads all three in one round trip (`_EXCHANGE`, a Lua script that returns either the
answer or the generation and the history); concurrent requests share that round trip
(`Batcher`), and answers, written behind the response, ride along in the same calls.

In front of Redis, `local_cache.LocalAnswers` keeps recent answers in process, coherent through
the users the history consumer publishes on `INVALIDATION_CHANNEL`.

Redis errors never fail a request: they are counted, the request is served without the cache
and without recent history, and after a few in a row a circuit breaker skips Redis for a short
cool-down, then lets a call through to see whether it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

import redis.asyncio as aredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from services.recommender.batching import Batcher
from services.recommender.metrics import RecommenderMetrics

log = logging.getLogger(__name__)

INVALIDATION_CHANNEL = "recsys:rec:invalidate"
REDIS_ERRORS = (RedisError, OSError, asyncio.TimeoutError)


class Keys:
    """The Redis key layout, shared with the history consumer."""

    PREFIX = "recsys:rec:"

    @staticmethod
    def generation(user_id: str) -> str:
        return f"{Keys.PREFIX}gen:{user_id}"

    @staticmethod
    def history(user_id: str) -> str:
        return f"{Keys.PREFIX}hist:{user_id}"

    @staticmethod
    def answer(user_id: str, request: str) -> str:
        return f"{Keys.PREFIX}ans:{user_id}:{request}"


def request_key(model: str, *parts: object, exclude: Iterable[str] = ()) -> str:
    """The part of an answer's key that names the model version and the request's options.

    `exclude` (any order) enters as a hash, so a long exclude list keeps the key short.
    """
    items = sorted(set(exclude))
    digest = "-"
    if items:
        digest = hashlib.blake2b("\x1f".join(items).encode(), digest_size=12).hexdigest()
    return ":".join((model, *map(str, parts), digest))


# One round trip for a batch of writes and lookups. KEYS: the answer keys to write, then
# (generation, answer, history) per lookup; ARGV[1]: the answers' TTL in seconds, ARGV[2]: the
# history length, ARGV[3]: how many answers to write, ARGV[3 + i]: the value of KEYS[i].
# Writes go first; then per lookup {1, payload} for an answer whose generation is current,
# else {0, generation, history}.
_EXCHANGE = """
local writes = tonumber(ARGV[3])
for i = 1, writes do
  redis.call('SET', KEYS[i], ARGV[3 + i], 'EX', ARGV[1])
end
local out = {}
for i = writes + 1, #KEYS, 3 do
  local gen = redis.call('GET', KEYS[i]) or '0'
  local answer = redis.call('GET', KEYS[i + 1])
  if answer and string.sub(answer, 1, #gen + 1) == gen .. ':' then
    out[#out + 1] = {1, string.sub(answer, #gen + 2)}
  else
    out[#out + 1] = {0, gen, redis.call('LRANGE', KEYS[i + 2], 0, tonumber(ARGV[2]) - 1)}
  end
end
return out
"""


@dataclass(frozen=True)
class Lookup:
    """What one round trip to Redis found for a request."""

    payload: bytes | None  # the cached answer, if current
    generation: bytes  # the user's counter when read (on a miss)
    history: tuple[str, ...]  # recent item ids, newest first (on a miss)


class _Op(NamedTuple):
    """A lookup (`value` None) or the write of an answer (`value`: `<gen>:<payload>`)."""

    user_id: str
    request: str
    value: bytes | None = None


class CircuitBreaker:
    """Opens after `threshold` failures in a row, for `cooldown_s`; then calls try again.

    One failure is not enough: on a saturated event loop a read can time out although Redis
    answered in time, and skipping the cache then would only add scoring load.
    """

    def __init__(self, cooldown_s: float, *, threshold: int = 3,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._cooldown_s = cooldown_s
        self._threshold = threshold
        self._clock = clock
        self._open_until = 0.0
        self._failures = 0  # in a row

    @property
    def failing(self) -> bool:
        """A failure has not been followed by a success yet."""
        return self._failures > 0

    def allows(self) -> bool:
        return self._clock() >= self._open_until

    def failed(self) -> None:
        self._failures += 1
        if self._failures >= self._threshold:
            self._open_until = self._clock() + self._cooldown_s

    def succeeded(self) -> None:
        self._failures = 0


def connect(url: str, *, timeout_s: float | None,
            connect_timeout_s: float = 1.0) -> aredis.Redis:
    """A client that fails fast: no retries; `timeout_s` on every read (None: wait)."""
    return aredis.Redis.from_url(
        url, socket_timeout=timeout_s, socket_connect_timeout=connect_timeout_s,
        retry=Retry(NoBackoff(), 0), socket_keepalive=True,
    )


class RedisCache:
    """Cached answers and recent history in Redis; every failure is absorbed and counted.

    Lookups and the writes of answers share one `Batcher`: each batch is one call of a Lua
    script, which Redis runs atomically, so a request costs a share of one round trip, and no
    key of a request is read half-written. The script touches several users' keys, so this
    needs a single Redis, not Redis Cluster.
    """

    def __init__(self, client: aredis.Redis, *, ttl_s: int, history_size: int,
                 breaker: CircuitBreaker, metrics: RecommenderMetrics) -> None:
        self._ttl_s = ttl_s
        self._history_size = history_size
        self._breaker = breaker
        self._metrics = metrics
        self._client = client
        self._script = client.register_script(_EXCHANGE)
        self._ops: Batcher[_Op, Lookup | None] = Batcher(self._exchange)

    async def lookup(self, user_id: str, request: str) -> Lookup | None:
        """The cached answer or the user's generation and history; None if Redis is out."""
        if not self._breaker.allows():
            return None
        return await self._ops.submit(_Op(user_id, request))

    def store(self, user_id: str, request: str, generation: bytes, payload: bytes) -> None:
        """Write an answer behind the response (the request does not wait for it)."""
        if self._breaker.allows():
            self._ops.submit(_Op(user_id, request, generation + b":" + payload))

    async def _exchange(self, ops: list[_Op]) -> list[Lookup | None]:
        written: list[str] = []
        values: list[bytes] = []
        looked_up: list[str] = []
        for op in ops:
            if op.value is None:
                looked_up += (Keys.generation(op.user_id), Keys.answer(op.user_id, op.request),
                              Keys.history(op.user_id))
            else:
                written.append(Keys.answer(op.user_id, op.request))
                values.append(op.value)
        try:
            replies = iter(await self._script(
                keys=written + looked_up,
                args=[self._ttl_s, self._history_size, len(values), *values]))
        except REDIS_ERRORS as exc:
            self._failed("lookup" if looked_up else "store", exc)
            return [None] * len(ops)
        self._succeeded()
        return [_lookup(next(replies)) if op.value is None else None for op in ops]

    def _failed(self, operation: str, exc: BaseException) -> None:
        self._metrics.redis_errors.labels(operation).inc()
        if not self._breaker.failing:
            log.warning("redis failed; serving without cache and history",
                        extra={"operation": operation, "error": repr(exc)})
        self._breaker.failed()

    def _succeeded(self) -> None:
        if self._breaker.failing:
            log.info("redis answers again; cache and history resume")
            self._breaker.succeeded()

    async def close(self) -> None:
        """Flush pending answer writes (briefly), then close the connections."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ops.drain(), timeout=1.0)
        await self._client.aclose()


def _lookup(reply: list[Any]) -> Lookup:
    """A reply of `_EXCHANGE` for one lookup."""
    if reply[0] == 1:
        return Lookup(reply[1], b"", ())
    return Lookup(None, reply[1], tuple(item.decode() for item in reply[2]))
