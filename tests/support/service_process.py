"""Our services as production runs them, `python -m services.<name>` in a process of its own,
and what a drain or crash test reads from one: its health as it changes, its metrics, its log."""

from __future__ import annotations

import json
import signal
import sys
import threading
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from scripts.localstack.components import Component, free_ports
from services.core.client import channel
from services.core.names import SERVICE_NAMES

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class ServiceProcess(Component):
    """One of the three services on free loopback ports, logging JSON to its log file."""

    def __init__(self, data_dir: Path, service: str, *, environ: dict[str, str]) -> None:
        super().__init__(data_dir)
        self.name = service  # type: ignore[misc]  # per instance: the service's short name
        self.service = SERVICE_NAMES[service]
        self.port, self.metrics_port = free_ports(2)
        self.environ = environ

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [sys.executable, "-m", f"services.{self.name}"]

    def env(self) -> dict[str, str]:
        return {**self.environ, "RECSYS_GRPC_PORT": str(self.port),
                "RECSYS_METRICS_PORT": str(self.metrics_port), "RECSYS_LOG_FORMAT": "json"}

    def probe(self) -> bool:
        with channel(self.target) as chan:
            answer = health_pb2_grpc.HealthStub(chan).Check(
                health_pb2.HealthCheckRequest(service=self.service), timeout=1)
        return answer.status == SERVING

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM, as Kubernetes stops a pod; the exit status, once it has exited."""
        assert self._proc is not None, f"{self.name} is not running"
        self._proc.send_signal(signal.SIGTERM)
        code = self._proc.wait(timeout)
        self.stop()  # the bookkeeping: the process is gone already
        return code

    def metric(self, name: str, /, **labels: str) -> float:
        """The sum of the samples `name` whose labels include `labels`, from /metrics."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        body = urllib.request.urlopen(url, timeout=5).read().decode()
        return sum(sample.value for family in text_string_to_metric_families(body)
                   for sample in family.samples
                   if sample.name == name
                   and all(sample.labels.get(k) == v for k, v in labels.items()))

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
