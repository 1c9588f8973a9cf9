"""Servers in the test's process on an event loop of their own, so that tests stay plain
synchronous code with blocking HTTP and gRPC clients."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry

from services.core import server
from services.core.server import App, RunningServer

T = TypeVar("T")


class LoopThread:
    """An asyncio loop on a daemon thread: the in-process servers live there."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="test-servers",
                                        daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def serve(self, app: App, settings: Any) -> RunningServer:
        return self.run(server.start(app, settings, CollectorRegistry()))

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


@contextlib.contextmanager
def serving(apps: list[tuple[str, App, Any]]) -> Iterator[dict[str, RunningServer]]:
    """Serve (name, app, settings) in this process, on one loop thread; stop them after."""
    loop = LoopThread()
    servers: dict[str, RunningServer] = {}
    try:
        for name, app, settings in apps:
            servers[name] = loop.serve(app, settings)
        yield servers
    finally:
        for running in servers.values():
            loop.run(running.stop(1.0))
        loop.close()
