"""The one way tests wait: poll for a positive signal, fail naming what never came.

Tests never assert on time (DESIGN.md). A test that expects something to happen polls a check
until it holds; a test that expects something NOT to happen waits for a later signal that
must follow it (an offset passed, a counter moved) and then looks. `timeout` only bounds how
long a broken system is waited for: it is never what a test checks.

`eventually` is for plain tests; `eventually_async` is the same wait for a test on an event
loop (its check may be a coroutine function, and its pauses let the loop run the servers).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

INTERVAL_S = 0.05


class _Attempts:
    """One wait: its deadline, and the last value or exception the check gave."""

    def __init__(self, what: str, timeout: float) -> None:
        self.what = what
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self.last: object = None
        self.error: Exception | None = None

    def returned(self, value: object) -> None:
        self.last, self.error = value, None

    def raised(self, error: Exception) -> None:
        """Not yet: a server still starting, an assertion still false."""
        self.error = error

    def give_up_if_late(self) -> None:
        if time.monotonic() >= self.deadline:
            seen = f"last error: {self.error!r}" if self.error else f"last value: {self.last!r}"
            raise AssertionError(
                f"{self.what}: not within {self.timeout:g} s ({seen})") from self.error


def eventually(check: Callable[[], T], *, timeout: float, what: str,
               interval: float = INTERVAL_S) -> T:
    """The first truthy value `check()` returns, calling it again every `interval` seconds
    while it returns a falsy value or raises; past `timeout` seconds, an AssertionError that
    names `what` and the last value or exception."""
    attempts = _Attempts(what, timeout)
    while True:
        try:
            value = check()
        except Exception as error:
            attempts.raised(error)
        else:
            if value:
                return value
            attempts.returned(value)
        attempts.give_up_if_late()
        time.sleep(interval)


async def eventually_async(
    check: Callable[[], T | Awaitable[T]], *,
    timeout: float,  # noqa: ASYNC109 (eventually's keyword: it bounds a poll, not one await)
    what: str, interval: float = INTERVAL_S,
) -> T:
    """`eventually` on an event loop: `check` may return an awaitable, which is awaited."""
    attempts = _Attempts(what, timeout)
    while True:
        try:
            value = check()
            if inspect.isawaitable(value):
                value = await value
        except Exception as error:
            attempts.raised(error)
        else:
            if value:
                return value  # type: ignore[return-value]
            attempts.returned(value)
        attempts.give_up_if_late()
        await asyncio.sleep(interval)
