"""The local stack's processes as Procfile-style lines (one shell command each), built from the
same component classes as the tests; `scripts/localstack/supervisor.py` runs them.

    from scripts.localstack.procfile import local_stack, procfile_line, service_lines
    stack = local_stack()                       # fixed ports, state in <repo>/.local/
    lines = {c.name: procfile_line(c) for c in stack.components} | service_lines(stack.ports)
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import yaml

from scripts.localstack.components import (
    HOST,
    Component,
    MlflowServer,
    Prometheus,
    RedisServer,
    SeaweedPorts,
    SeaweedS3,
    TansuBroker,
)

ROOT = Path(__file__).resolve().parents[2]
STATE_DIR = ROOT / ".local"  # git-ignored
OBSERVABILITY = ROOT / "observability"
SERVICES = ("ingest", "trainer", "recommender")


@dataclass(frozen=True, kw_only=True)
class LocalPorts:
    """The local stack's fixed ports (DESIGN.md); the `_2` ones are the second replicas'."""

    kafka: int = 9092
    redis: int = 6379
    mlflow: int = 5000
    s3: int = 8333
    prometheus: int = 9090
    ingest_grpc: int = 50051
    ingest_metrics: int = 9101
    trainer_grpc: int = 50052
    trainer_metrics: int = 9102
    recommender_grpc: int = 50053
    recommender_metrics: int = 9103
    envoy: int = 8080
    envoy_admin: int = 9901
    ingest_2_grpc: int = 50054
    ingest_2_metrics: int = 9104
    recommender_2_grpc: int = 50055
    recommender_2_metrics: int = 9105

    def replicas(self, service: str, count: int = 1) -> list[tuple[int, int]]:
        """(gRPC port, metrics port) of each of `count` replicas of a service (at most two;
        the trainer, the dataset's one writer, always runs once)."""
        ports = [(getattr(self, f"{service}_grpc"), getattr(self, f"{service}_metrics"))]
        if count > 1 and service != "trainer":
            ports.append((getattr(self, f"{service}_2_grpc"),
                          getattr(self, f"{service}_2_metrics")))
        return ports


@dataclass(frozen=True, kw_only=True)
class LocalStack:
    state_dir: Path
    ports: LocalPorts
    seaweed: SeaweedS3
    kafka: TansuBroker
    redis: RedisServer
    mlflow: MlflowServer
    prometheus: Prometheus

    @property
    def components(self) -> tuple[Component, ...]:
        """In start order: Tansu's storage first."""
        return (self.seaweed, self.kafka, self.redis, self.mlflow, self.prometheus)

    def endpoints(self) -> dict[str, str]:
        """Where each component answers; the lead maps these onto the services' settings."""
        return {
            "kafka_bootstrap": self.kafka.bootstrap,
            "redis_url": self.redis.url,
            "mlflow_tracking_uri": self.mlflow.tracking_uri,
            "s3_endpoint": self.seaweed.endpoint,
            "prometheus_url": self.prometheus.url,
        }


def prometheus_config_for(ports: LocalPorts, replicas: int = 1) -> str:
    """observability/prometheus.yml pointed at these ports: the same jobs and rules as in
    Kubernetes, so the dashboards and alerts can be checked against the local stack."""
    config = yaml.safe_load((OBSERVABILITY / "prometheus.yml").read_text())
    targets = {"prometheus": [ports.prometheus], "envoy": [ports.envoy_admin]} | {
        service: [metrics for _, metrics in ports.replicas(service, replicas)]
        for service in SERVICES}
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": [f"{HOST}:{port}"
                                              for port in targets[job["job_name"]]]}]
    config["rule_files"] = [str(OBSERVABILITY / pattern) for pattern in config["rule_files"]]
    return yaml.safe_dump(config, sort_keys=False)


def local_stack(state_dir: Path = STATE_DIR, ports: LocalPorts | None = None, *,
                seaweed_ports: SeaweedPorts | None = None, free_seaweed: bool = False,
                prometheus_config: Path | None = None, replicas: int = 1) -> LocalStack:
    """The components of the local stack; Kafka is durable (Tansu on SeaweedFS S3).

    Without `prometheus_config`, observability/prometheus.yml is rendered for these ports
    (and `replicas` of ingest and the recommender).
    `seaweed_ports` defaults to weed's usual ports around `ports.s3`, or to free ports
    (`free_seaweed`, for a stack beside another one); `ports.s3` always wins.
    """
    ports = ports or LocalPorts()
    state_dir = Path(state_dir).resolve()
    if prometheus_config is None:
        prometheus_config = state_dir / "prometheus" / "prometheus.yml"
        prometheus_config.parent.mkdir(parents=True, exist_ok=True)
        prometheus_config.write_text(prometheus_config_for(ports, replicas))
    if seaweed_ports is None:
        seaweed_ports = SeaweedPorts.free() if free_seaweed else SeaweedPorts.local(ports.s3)
    if seaweed_ports.s3 != ports.s3:
        seaweed_ports = replace(seaweed_ports, s3=ports.s3)
    seaweed = SeaweedS3(state_dir / "seaweed", ports=seaweed_ports)
    return LocalStack(
        state_dir=state_dir,
        ports=ports,
        seaweed=seaweed,
        kafka=TansuBroker(state_dir / "kafka", port=ports.kafka, storage=seaweed),
        redis=RedisServer(state_dir / "redis", port=ports.redis),
        mlflow=MlflowServer(state_dir / "mlflow", port=ports.mlflow, authenticated=True),
        prometheus=Prometheus(state_dir / "prometheus", config_file=prometheus_config,
                              port=ports.prometheus),
    )


def procfile_line(component: Component) -> str:
    """`cd repo && export ENV && pre-steps && exec COMMAND`: the same argv start() runs, as
    one shell line."""
    steps = [f"cd {shlex.quote(str(ROOT))}"]
    if env := component.env():
        steps.append("export " + " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items()))
    steps += [shlex.join(cmd) for cmd in component.pre_commands()]
    steps.append("exec " + shlex.join(component.command()))
    return " && ".join(steps)


def service_line(module: str, *, grpc_port: int, metrics_port: int,
                 env: Mapping[str, str] | None = None) -> str:
    """The line of one of our gRPC servers (`python -m services.<name>`)."""
    variables = {"RECSYS_GRPC_PORT": str(grpc_port), "RECSYS_METRICS_PORT": str(metrics_port),
                 **(env or {})}
    assignments = " ".join(f"{k}={shlex.quote(v)}" for k, v in variables.items())
    return (f"cd {shlex.quote(str(ROOT))} && exec env {assignments} "
            f"{shlex.quote(sys.executable)} -m {module}")


def service_lines(ports: LocalPorts, env: Mapping[str, str] | None = None, *,
                  replicas: int = 1,
                  own: Mapping[str, Mapping[str, str]] | None = None) -> dict[str, str]:
    """The services' lines by program name: "ingest", "trainer", "recommender", and with
    `replicas` 2 also "ingest-2" and "recommender-2" (the trainer runs once); `own` adds
    variables for one service only (by service name: its MLflow account)."""
    own = own or {}
    return {
        service if n == 0 else f"{service}-{n + 1}": service_line(
            f"services.{service}", grpc_port=grpc_port, metrics_port=metrics_port,
            env={**(env or {}), **own.get(service, {})})
        for service in SERVICES
        for n, (grpc_port, metrics_port) in enumerate(ports.replicas(service, replicas))
    }
