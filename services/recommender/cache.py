"""Redis state shared by every replica, and a small coherent tier of answers in process.

Per user, Redis holds (see `Keys`):
- `gen`: a counter the history consumer increments whenever the user interacts;
- `hist`: the user's most recent item ids, newest first, bounded;
- `ans:<request>`: a cached answer, stored as `<gen>:<payload>` with a TTL. `<request>` names
  the model version and every parameter that changes the answer, so a new model version never
  meets an old answer, and an answer whose `gen` is behind the user's counter is a miss: one
  INCR invalidates all of a user's answers.

A request reads all three in one round trip (`_LOOKUP`, a Lua script that returns either the
answer or the generation and the history); concurrent requests share that round trip
(`Batcher`). Answers are written behind the response, batched the same way.

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
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

import redis.asyncio as aredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

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


# KEYS: (generation, answer, history) per request; ARGV[1]: history length. Per request,
# {1, payload} for an answer whose generation is current, else {0, generation, history}.
_LOOKUP = """
local out = {}
for i = 1, #KEYS, 3 do
  local gen = redis.call('GET', KEYS[i]) or '0'
  local answer = redis.call('GET', KEYS[i + 1])
  if answer and string.sub(answer, 1, #gen + 1) == gen .. ':' then
    out[#out + 1] = {1, string.sub(answer, #gen + 2)}
  else
    out[#out + 1] = {0, gen, redis.call('LRANGE', KEYS[i + 2], 0, tonumber(ARGV[1]) - 1)}
  end
end
return out
"""

# KEYS: answer keys; ARGV[1]: TTL in seconds, ARGV[i + 1]: the value for KEYS[i].
_STORE = """
for i, key in ipairs(KEYS) do
  redis.call('SET', key, ARGV[i + 1], 'EX', ARGV[1])
end
return #KEYS
"""

@dataclass(frozen=True)
class Lookup:
    """What one round trip to Redis found for a request."""

    payload: bytes | None  # the cached answer, if current
    generation: bytes  # the user's counter when read (on a miss)
    history: tuple[str, ...]  # recent item ids, newest first (on a miss)


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


A = TypeVar("A")
R = TypeVar("R")


class Batcher(Generic[A, R]):
    """Auto-pipelining: everything submitted while a call is in flight goes in the next call.

    Idle, a call goes out at once (on the next turn of the loop); under load, calls grow with
    the load instead of multiplying, so Redis costs one client round trip per batch rather
    than per request. `send` returns one result per argument, in order.
    """

    def __init__(self, send: Callable[[list[A]], Awaitable[list[R]]], *,
                 max_batch: int = 256) -> None:
        self._send = send
        self._max_batch = max_batch
        self._queue: list[tuple[A, asyncio.Future[R]]] = []
        self._draining: asyncio.Task[None] | None = None

    def submit(self, arg: A) -> asyncio.Future[R]:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((arg, future))
        if self._draining is None:
            self._draining = asyncio.create_task(self._drain())
        return future

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch = self._queue[: self._max_batch]
                del self._queue[: self._max_batch]
                try:
                    results = await self._send([arg for arg, _ in batch])
                except Exception as exc:  # every waiter of the batch gets the failure
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(result)
        finally:
            self._draining = None

    async def drain(self) -> None:
        """Wait until everything submitted so far has been sent."""
        if self._draining is not None:
            await asyncio.shield(self._draining)


class RedisCache:
    """Cached answers and recent history in Redis; every failure is absorbed and counted.

    Lookups and stores are each batched (`Batcher`) into one Lua script call, which Redis
    runs atomically: one round trip per batch, and no key of a request is read half-written.
    The scripts touch several users' keys, so this needs a single Redis, not Redis Cluster.
    """

    def __init__(self, client: aredis.Redis, *, ttl_s: int, history_size: int,
                 breaker: CircuitBreaker, metrics: RecommenderMetrics) -> None:
        self._ttl_s = ttl_s
        self._history_size = history_size
        self._breaker = breaker
        self._metrics = metrics
        self._client = client
        self._lookup_script = client.register_script(_LOOKUP)
        self._store_script = client.register_script(_STORE)
        self._lookups: Batcher[tuple[str, str], Lookup | None] = Batcher(self._lookup_batch)
        self._stores: Batcher[tuple[str, bytes], None] = Batcher(self._store_batch)

    async def lookup(self, user_id: str, request: str) -> Lookup | None:
        """The cached answer or the user's generation and history; None if Redis is out."""
        if not self._breaker.allows():
            return None
        return await self._lookups.submit((user_id, request))

    def store(self, user_id: str, request: str, generation: bytes, payload: bytes) -> None:
        """Write an answer behind the response (the request does not wait for it)."""
        if self._breaker.allows():
            self._stores.submit((Keys.answer(user_id, request), generation + b":" + payload))

    async def _lookup_batch(self, requests: list[tuple[str, str]]) -> list[Lookup | None]:
        keys: list[str] = []
        for user_id, request in requests:
            keys += (Keys.generation(user_id), Keys.answer(user_id, request),
                     Keys.history(user_id))
        try:
            replies = await self._lookup_script(keys=keys, args=[self._history_size])
        except REDIS_ERRORS as exc:
            self._failed("lookup", exc)
            return [None] * len(requests)
        self._succeeded()
        return [
            Lookup(reply[1], b"", ()) if reply[0] == 1
            else Lookup(None, reply[1], tuple(item.decode() for item in reply[2]))
            for reply in replies
        ]

    async def _store_batch(self, answers: list[tuple[str, bytes]]) -> list[None]:
        try:
            await self._store_script(keys=[key for key, _ in answers],
                                     args=[self._ttl_s, *(value for _, value in answers)])
        except REDIS_ERRORS as exc:
            self._failed("store", exc)
        return [None] * len(answers)

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
            await asyncio.wait_for(self._stores.drain(), timeout=1.0)
        await self._client.aclose()
