"""`eventually`: the first truthy value, retries over falsy values and exceptions, and a
failure that names what was awaited and what was seen last."""

from __future__ import annotations

import itertools

import pytest

from tests.support.polling import eventually, eventually_async


def test_returns_the_first_truthy_value() -> None:
    calls = itertools.count()
    assert eventually(lambda: max(next(calls) - 2, 0), timeout=10, what="a count", interval=0) == 1


def test_an_exception_is_another_try() -> None:
    calls = itertools.count()

    def check() -> str:
        if next(calls) < 2:
            raise ConnectionRefusedError("not up yet")
        return "up"

    assert eventually(check, timeout=10, what="the server", interval=0) == "up"


def test_fails_naming_what_and_the_last_value() -> None:
    with pytest.raises(AssertionError, match=r"^three rows: not within 0 s \(last value: \[\]\)$"):
        eventually(list, timeout=0, what="three rows")


def test_fails_naming_the_last_exception_as_its_cause() -> None:
    refused = ConnectionRefusedError("refused")

    def check() -> bool:
        raise refused

    with pytest.raises(AssertionError, match=r"last error: ConnectionRefusedError") as caught:
        eventually(check, timeout=0, what="health")
    assert caught.value.__cause__ is refused


async def test_the_async_wait_awaits_a_coroutine_check() -> None:
    calls = itertools.count()

    async def check() -> int:
        return next(calls)

    assert await eventually_async(check, timeout=10, what="a count", interval=0) == 1
    with pytest.raises(AssertionError, match=r"^nothing: not within 0 s \(last value: None\)$"):
        await eventually_async(lambda: None, timeout=0, what="nothing")
