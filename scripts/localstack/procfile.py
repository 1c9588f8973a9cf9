"""The local stack's Procfile (run by honcho), built from the same component classes as the tests.

    from scripts.localstack.procfile import local_stack, write_procfile, honcho_argv
    stack = local_stack()                       # fixed ports, state in <repo>/.local/
    write_procfile(stack, extra=service_lines(stack.ports))   # once the services exist
    subprocess.run(honcho_argv(stack))

`python -m scripts.localstack.procfile` writes the files and prints where, and the honcho command.
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
    VENV_BIN,
    Component,
    MlflowServer,
    Prometheus,
    RedisServer,
    SeaweedPorts,
    SeaweedS3,
    TansuBroker,
    write_private,
)

ROOT = Path(__file__).resolve().parents[2]
STATE_DIR = ROOT / ".local"  # git-ignored
OBSERVABILITY = ROOT / "observability"


@dataclass(frozen=True, kw_only=True)
class LocalPorts:
    """The local stack's fixed ports (DESIGN.md)."""

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


def prometheus_config_for(ports: LocalPorts) -> str:
    """observability/prometheus.yml pointed at these ports: the same jobs and rules as in
    Kubernetes, so the dashboards and alerts can be checked against the local stack."""
    config = yaml.safe_load((OBSERVABILITY / "prometheus.yml").read_text())
    targets = {"prometheus": ports.prometheus, "ingest": ports.ingest_metrics,
               "trainer": ports.trainer_metrics, "recommender": ports.recommender_metrics,
               "envoy": ports.envoy_admin}
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": [f"{HOST}:{targets[job['job_name']]}"]}]
    config["rule_files"] = [str(OBSERVABILITY / pattern) for pattern in config["rule_files"]]
    return yaml.safe_dump(config, sort_keys=False)


def local_stack(state_dir: Path = STATE_DIR, ports: LocalPorts | None = None, *,
                seaweed_ports: SeaweedPorts | None = None, free_seaweed: bool = False,
                prometheus_config: Path | None = None) -> LocalStack:
    """The components of the local stack; Kafka is durable (Tansu on SeaweedFS S3).

    Without `prometheus_config`, observability/prometheus.yml is rendered for these ports.
    `seaweed_ports` defaults to weed's usual ports around `ports.s3`, or to free ports
    (`free_seaweed`, for a stack beside another one); `ports.s3` always wins.
    """
    ports = ports or LocalPorts()
    state_dir = Path(state_dir).resolve()
    if prometheus_config is None:
        prometheus_config = state_dir / "prometheus" / "prometheus.yml"
        prometheus_config.parent.mkdir(parents=True, exist_ok=True)
        prometheus_config.write_text(prometheus_config_for(ports))
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
    """`cd repo && export ENV && pre-steps && exec COMMAND`: the same argv start() runs."""
    steps = [f"cd {shlex.quote(str(ROOT))}"]
    if env := component.env():
        steps.append("export " + " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items()))
    steps += [shlex.join(cmd) for cmd in component.pre_commands()]
    steps.append("exec " + shlex.join(component.command()))
    return " && ".join(steps)


def service_line(module: str, *, grpc_port: int, metrics_port: int,
                 env: Mapping[str, str] | None = None) -> str:
    """A Procfile command for one of our gRPC servers (`python -m services.<name>`)."""
    variables = {"RECSYS_GRPC_PORT": str(grpc_port), "RECSYS_METRICS_PORT": str(metrics_port),
                 **(env or {})}
    assignments = " ".join(f"{k}={shlex.quote(v)}" for k, v in variables.items())
    return (f"cd {shlex.quote(str(ROOT))} && exec env {assignments} "
            f"{shlex.quote(sys.executable)} -m {module}")


def service_lines(ports: LocalPorts, env: Mapping[str, str] | None = None, *,
                  own: Mapping[str, Mapping[str, str]] | None = None) -> dict[str, str]:
    """The three services' lines, for `write_procfile(extra=...)` once they exist; `own`
    adds variables for one service only (by name: its MLflow account)."""
    own = own or {}

    def variables(name: str) -> dict[str, str]:
        return {**(env or {}), **own.get(name, {})}

    return {
        "ingest": service_line("services.ingest", grpc_port=ports.ingest_grpc,
                               metrics_port=ports.ingest_metrics, env=variables("ingest")),
        "trainer": service_line("services.trainer", grpc_port=ports.trainer_grpc,
                                metrics_port=ports.trainer_metrics, env=variables("trainer")),
        "recommender": service_line("services.recommender", grpc_port=ports.recommender_grpc,
                                    metrics_port=ports.recommender_metrics,
                                    env=variables("recommender")),
    }


def procfile_text(stack: LocalStack, *, extra: Mapping[str, str] | None = None) -> str:
    """Component lines, then `extra` (services, Envoy) or commented placeholders for them."""
    lines = ["# Generated by scripts/localstack/procfile.py; edit that, not this file."]
    lines += [f"{c.name}: {procfile_line(c)}" for c in stack.components]
    if extra is not None:
        lines += [f"{name}: {command}" for name, command in extra.items()]
    else:
        lines.append("# Placeholders: pass extra=service_lines(ports) | {'envoy': ...}")
        lines += [f"# {name}: {command}" for name, command in service_lines(stack.ports).items()]
        lines.append(f"# envoy: (Envoy component; listener {stack.ports.envoy}, "
                     f"admin {stack.ports.envoy_admin})")
    return "\n".join(lines) + "\n"


def write_procfile(stack: LocalStack, *, extra: Mapping[str, str] | None = None,
                   env: Mapping[str, str] | None = None) -> tuple[Path, Path]:
    """Write `<state>/Procfile` and `<state>/.env`; prepare every component's data dir.

    `.env` holds only variables safe for every process; component-specific ones are inline
    in their own line so, e.g., Tansu's S3 keys reach nothing else.
    """
    for component in stack.components:
        component.prepare()
    procfile = stack.state_dir / "Procfile"
    write_private(procfile, procfile_text(stack, extra=extra))  # services' MLflow passwords
    variables = {
        "PYTHONUNBUFFERED": "1",
        "MLFLOW_TRACKING_URI": stack.mlflow.tracking_uri,
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "true",
        "AWS_EC2_METADATA_DISABLED": "true",
        "NO_PROXY": "127.0.0.1,localhost",
        **(env or {}),
    }
    dotenv = stack.state_dir / ".env"
    write_private(dotenv, "".join(f"{k}={shlex.quote(v)}\n" for k, v in variables.items()))
    return procfile, dotenv



def honcho_argv(stack: LocalStack) -> list[str]:
    """The command that runs the Procfile (honcho stops every line when one exits)."""
    return [str(VENV_BIN / "honcho"), "start", "-d", str(ROOT),
            "-f", str(stack.state_dir / "Procfile"), "-e", str(stack.state_dir / ".env")]


def main() -> None:
    stack = local_stack()
    procfile, _ = write_procfile(stack)
    print(f"wrote {procfile} (owner-only: it holds MLflow's keys)")
    print("run:", shlex.join(honcho_argv(stack)))


if __name__ == "__main__":
    main()
