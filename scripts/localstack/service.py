"""One of our services as production runs it, `python -m services.<name>` in a process of its
own on free loopback ports: for tests that stop or kill it, and for benchmarks."""

from __future__ import annotations

import signal
import sys
import urllib.request
from pathlib import Path

from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from scripts.localstack.components import HOST, Component, free_ports
from services.core.client import channel
from services.core.names import SERVICE_NAMES


class ServiceProcess(Component):
    """A service (by its short name) with `environ` as its settings; ready once SERVING."""

    def __init__(self, data_dir: Path, service: str, *, environ: dict[str, str]) -> None:
        super().__init__(data_dir)
        self.name = service  # type: ignore[misc]  # per instance: the service's short name
        self.service = SERVICE_NAMES[service]
        self.port, self.metrics_port = free_ports(2)
        self.environ = environ

    @property
    def target(self) -> str:
        return f"{HOST}:{self.port}"

    def command(self) -> list[str]:
        return [sys.executable, "-m", f"services.{self.name}"]

    def env(self) -> dict[str, str]:
        return {**self.environ, "RECSYS_GRPC_PORT": str(self.port),
                "RECSYS_METRICS_PORT": str(self.metrics_port), "RECSYS_LOG_FORMAT": "json"}

    def probe(self) -> bool:
        with channel(self.target) as chan:
            answer = health_pb2_grpc.HealthStub(chan).Check(
                health_pb2.HealthCheckRequest(service=self.service), timeout=1)
        return answer.status == health_pb2.HealthCheckResponse.SERVING

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM, as Kubernetes stops a pod; the exit status, once it has exited."""
        assert self._proc is not None, f"{self.name} is not running"
        self._proc.send_signal(signal.SIGTERM)
        code = self._proc.wait(timeout)
        self.stop()  # the bookkeeping: the process is gone already
        return code

    def metric(self, name: str, /, **labels: str) -> float:
        """The sum of the samples `name` whose labels include `labels`, from /metrics."""
        url = f"http://{HOST}:{self.metrics_port}/metrics"
        body = urllib.request.urlopen(url, timeout=5).read().decode()
        return sum(sample.value for family in text_string_to_metric_families(body)
                   for sample in family.samples
                   if sample.name == name
                   and all(sample.labels.get(k) == v for k, v in labels.items()))
