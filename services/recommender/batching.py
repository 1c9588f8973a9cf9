"""Auto-pipelining for asyncio: requests that arrive while a call is in flight share the next.

Used for Redis round trips (`cache`) and for scoring (`engine`): under load a call's batch grows
with the load instead of the calls multiplying, so a fixed cost is paid per batch, not per
request; idle, a request goes out at once (on the next turn of the loop).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

A = TypeVar("A")
R = TypeVar("R")


class Batcher(Generic[A, R]):
    """Everything submitted while a call is in flight goes in the next call (at most
    `max_batch`). `send` returns one result per argument, in order; if it raises, every
    waiter of that batch gets the exception."""

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
