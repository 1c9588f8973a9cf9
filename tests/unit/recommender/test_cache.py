"""The cache without Redis: key derivation, the in-process tier, the circuit breaker, batching."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry

from services.recommender.batching import Batcher
from services.recommender.cache import CircuitBreaker, Keys, Lookup, RedisCache, request_key
from services.recommender.local_cache import LocalAnswers
from services.recommender.metrics import RecommenderMetrics
from tests.support.polling import eventually_async


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_request_key_ignores_exclude_order_and_repeats() -> None:
    assert request_key("m/1/r", 10, 1, exclude=["b", "a", "b"]) == \
        request_key("m/1/r", 10, 1, exclude=["a", "b"])


def test_request_key_changes_with_every_parameter() -> None:
    base = request_key("m/1/r", 10, 1, exclude=["a"])
    assert len({
        base,
        request_key("m/2/r", 10, 1, exclude=["a"]),
        request_key("m/1/r", 11, 1, exclude=["a"]),
        request_key("m/1/r", 10, 0, exclude=["a"]),
        request_key("m/1/r", 10, 1, exclude=["a", "c"]),
        request_key("m/1/r", 10, 1),
    }) == 6


def _tier(capacity: int = 3, clock: Clock | None = None) -> LocalAnswers[str]:
    tier: LocalAnswers[str] = LocalAnswers(capacity, 10.0, clock=clock or Clock())
    tier.coherent = True
    return tier


def test_local_tier_keeps_nothing_until_coherent() -> None:
    tier: LocalAnswers[str] = LocalAnswers(3, 10.0)
    tier.put("u1", "r", "answer", epoch=tier.epoch())
    assert tier.get("u1", "r") is None
    tier.coherent = True
    tier.put("u1", "r", "answer", epoch=tier.epoch())
    assert tier.get("u1", "r") == "answer"


def test_local_tier_expires_entries() -> None:
    clock = Clock()
    tier = _tier(clock=clock)
    tier.put("u1", "r", "answer", epoch=tier.epoch())
    clock.now += 10.5
    assert tier.get("u1", "r") is None
    assert len(tier) == 0


def test_local_tier_evicts_least_recently_used() -> None:
    tier = _tier(capacity=2)
    tier.put("u1", "r", "one", epoch=tier.epoch())
    tier.put("u2", "r", "two", epoch=tier.epoch())
    assert tier.get("u1", "r") == "one"  # u2 is now the least recently used
    tier.put("u3", "r", "three", epoch=tier.epoch())
    assert (tier.get("u1", "r"), tier.get("u2", "r"), tier.get("u3", "r")) == \
        ("one", None, "three")


def test_invalidation_drops_only_that_users_answers() -> None:
    tier = _tier()
    tier.put("u1", "a", "1a", epoch=tier.epoch())
    tier.put("u1", "b", "1b", epoch=tier.epoch())
    tier.put("u2", "a", "2a", epoch=tier.epoch())
    tier.invalidate(["u1", "unknown"])
    assert (tier.get("u1", "a"), tier.get("u1", "b"), tier.get("u2", "a")) == (None, None, "2a")


def test_an_answer_looked_up_before_an_invalidation_is_not_kept() -> None:
    tier = _tier()
    epoch = tier.epoch()
    tier.invalidate(["u1"])  # arrives while the answer is being computed
    tier.put("u1", "r", "stale", epoch=epoch)
    assert tier.get("u1", "r") is None


def test_losing_coherence_clears_the_tier() -> None:
    tier = _tier()
    tier.put("u1", "r", "answer", epoch=tier.epoch())
    tier.coherent = False
    assert tier.get("u1", "r") is None
    tier.put("u1", "r", "answer", epoch=tier.epoch())
    assert len(tier) == 0


def test_breaker_opens_after_failures_in_a_row_and_retries_after_cooldown() -> None:
    clock = Clock()
    breaker = CircuitBreaker(1.0, threshold=2, clock=clock)
    breaker.failed()
    assert breaker.allows() and breaker.failing
    breaker.succeeded()
    breaker.failed()
    assert breaker.allows()  # the success reset the count
    breaker.failed()
    assert not breaker.allows()
    clock.now += 1.0
    assert breaker.allows()
    breaker.succeeded()
    assert not breaker.failing


async def test_batcher_sends_what_arrives_meanwhile_in_one_call() -> None:
    calls: list[list[int]] = []
    answer = asyncio.Event()  # a call is in flight until the test lets it answer

    async def send(batch: list[int]) -> list[int]:
        calls.append(batch)
        await answer.wait()
        return [n * 10 for n in batch]

    batcher: Batcher[int, int] = Batcher(send)
    first = batcher.submit(1)
    await eventually_async(lambda: calls == [[1]], timeout=10, what="the first call in flight")
    rest = [batcher.submit(n) for n in (2, 3, 4)]
    answer.set()
    assert await asyncio.gather(first, *rest) == [10, 20, 30, 40]
    assert calls == [[1], [2, 3, 4]]


async def test_batcher_fails_every_waiter_of_a_failed_call_and_goes_on() -> None:
    async def send(batch: list[int]) -> list[int]:
        if 0 in batch:
            raise ConnectionError("down")
        return batch

    batcher: Batcher[int, int] = Batcher(send)
    failed = [batcher.submit(0), batcher.submit(1)]
    for future in failed:
        with pytest.raises(ConnectionError):
            await future
    assert await batcher.submit(2) == 2


class FakeScript:
    """Stands in for the registered `_EXCHANGE` script: records calls, answers lookups."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], list[object]]] = []

    async def __call__(self, *, keys: list[str], args: list[object]) -> list[list[object]]:
        self.calls.append((keys, args))
        lookups = (len(keys) - int(args[2])) // 3  # type: ignore[call-overload]
        return [[0, b"7", [b"i1", b"i2"]]] * lookups


class FakeClient:
    def __init__(self) -> None:
        self.script = FakeScript()

    def register_script(self, source: str) -> FakeScript:
        return self.script


async def test_lookups_and_writes_share_one_round_trip() -> None:
    client = FakeClient()
    cache = RedisCache(client, ttl_s=60, history_size=2,  # type: ignore[arg-type]
                       breaker=CircuitBreaker(1.0),
                       metrics=RecommenderMetrics.create(CollectorRegistry()))
    lookups = asyncio.gather(cache.lookup("u2", "r2"), cache.lookup("u3", "r3"))
    cache.store("u1", "r1", b"3", b"payload")  # in the same turn of the loop as the lookups
    assert await lookups == [Lookup(None, b"7", ("i1", "i2"))] * 2
    [(keys, args)] = client.script.calls
    assert keys == [Keys.answer("u1", "r1"),  # writes first, then a triple per lookup
                    Keys.generation("u2"), Keys.answer("u2", "r2"), Keys.history("u2"),
                    Keys.generation("u3"), Keys.answer("u3", "r3"), Keys.history("u3")]
    assert args == [60, 2, 1, b"3:payload"]
