"""What a drain or crash test reads from a service process (scripts/localstack/service.py): its
log, and its health as it changes."""

from __future__ import annotations

import json
import threading
from types import TracebackType
from typing import Any, Self

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from scripts.localstack.service import ServiceProcess

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class LoggedService(ServiceProcess):
    """A service process whose JSON log a test reads."""

    def logged(self) -> list[dict[str, Any]]:
        """Every JSON line of its log, in order (the log spans restarts)."""
        return [json.loads(line) for line in self.log_path.read_text().splitlines()
                if line.startswith("{")]

    def messages(self) -> list[str]:
        return [line["msg"] for line in self.logged()]

    def last(self, message: str) -> dict[str, Any]:
        """The last log line with this message."""
        return next(line for line in reversed(self.logged()) if line["msg"] == message)


class HealthWatch:
    """grpc.health.v1 Watch of one service, on a thread: every status it is sent, in order,
    until NOT_SERVING (then it lets go, or the watch would hold the server's drain for its
    whole grace period) or the server goes away. `with HealthWatch(target, service) as w:`"""

    def __init__(self, target: str, service: str) -> None:
        self.statuses: list[int] = []
        self._channel = grpc.insecure_channel(target)
        self._call = health_pb2_grpc.HealthStub(self._channel).Watch(
            health_pb2.HealthCheckRequest(service=service))
        self._thread = threading.Thread(target=self._follow, daemon=True)

    def _follow(self) -> None:
        try:
            for reply in self._call:
                self.statuses.append(reply.status)
                if reply.status == NOT_SERVING:
                    self._call.cancel()
        except grpc.RpcError:
            pass  # the server stopped, or the watch was cancelled

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._call.cancel()
        self._thread.join(10)
        self._channel.close()
