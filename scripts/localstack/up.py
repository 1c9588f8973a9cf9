"""Bring the whole local stack up under honcho, optionally run the main job, serve until stopped.

    python -m scripts.localstack.up                 # stack + main job, then serve (Ctrl-C stops)
    python -m scripts.localstack.up --no-job        # stack only
    python -m scripts.localstack.up --movielens ../shared/datasets/ml-100k

The stack: SeaweedFS S3 and the Tansu broker on it (durable), Redis, MLflow, Prometheus, the
three gRPC services and Envoy, each a line of one Procfile run by honcho, with every log line
in <state>/stack.log. When everything answers, <state>/endpoints.json lists where, and the
endpoints are printed. SIGINT or SIGTERM stops honcho, which stops every process.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from scripts.localstack.components import HOST, ComponentError, free_ports, http_ok
from scripts.localstack.envoy import Envoy
from scripts.localstack.procfile import (
    STATE_DIR,
    LocalPorts,
    LocalStack,
    honcho_argv,
    local_stack,
    procfile_line,
    service_lines,
    write_procfile,
)

SERVICES = {
    "ingest": "recsys.ingest.v1.IngestService",
    "trainer": "recsys.trainer.v1.TrainerService",
    "recommender": "recsys.recommender.v1.RecommenderService",
}


def _log(message: str) -> None:
    print(f"\033[1m[stack]\033[0m {message}", flush=True)


def service_env(stack: LocalStack) -> dict[str, str]:
    """The settings that point the services at the stack's components."""
    return {
        "RECSYS_KAFKA_BOOTSTRAP": stack.kafka.bootstrap,
        "RECSYS_MLFLOW_TRACKING_URI": stack.mlflow.tracking_uri,
        "RECSYS_REDIS_URL": stack.redis.url,
        "RECSYS_TRAINER_DATA_DIR": str(stack.state_dir / "trainer"),
        "RECSYS_LOG_FORMAT": "text",
    }


def envoy_for(stack: LocalStack) -> Envoy:
    p = stack.ports
    return Envoy(stack.state_dir / "envoy", port=p.envoy, admin_port=p.envoy_admin,
                 ingest=f"{HOST}:{p.ingest_grpc}", trainer=f"{HOST}:{p.trainer_grpc}",
                 recommender=f"{HOST}:{p.recommender_grpc}")


def endpoints(stack: LocalStack, envoy: Envoy) -> dict[str, str]:
    p = stack.ports
    return {
        "ingest_grpc": f"{HOST}:{p.ingest_grpc}",
        "trainer_grpc": f"{HOST}:{p.trainer_grpc}",
        "recommender_grpc": f"{HOST}:{p.recommender_grpc}",
        "rest_base_url": envoy.url,
        "envoy_grpc": envoy.target,
        "envoy_admin": envoy.admin_url,
        "mlflow_ui": stack.mlflow.tracking_uri,
        "prometheus_ui": stack.prometheus.url,
        "kafka_bootstrap": stack.kafka.bootstrap,
        "redis_url": stack.redis.url,
        "metrics": ", ".join(
            f"http://{HOST}:{port}/metrics"
            for port in (p.ingest_metrics, p.trainer_metrics, p.recommender_metrics)
        ),
    }


def _answers_health(target: str, service: str, *, serving: bool) -> bool:
    with grpc.insecure_channel(target) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=1
            )
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING or not serving


def wait_ready(stack: LocalStack, envoy: Envoy, honcho: subprocess.Popen[bytes],
               timeout: float) -> None:
    """Poll every component until it answers; fail early if honcho stopped."""
    p = stack.ports
    checks: dict[str, Callable[[], bool]] = {c.name: c.probe for c in stack.components}
    # The recommender is NOT_SERVING until a champion exists: answering is enough here.
    checks |= {
        name: (lambda t=f"{HOST}:{port}", s=service, need=(name != "recommender"):
               _answers_health(t, s, serving=need))
        for (name, service), port in zip(
            SERVICES.items(), (p.ingest_grpc, p.trainer_grpc, p.recommender_grpc), strict=True)
    }
    checks["envoy"] = lambda: http_ok(envoy.admin_port, "/ready")
    deadline = time.monotonic() + timeout
    pending = dict(checks)
    while pending:
        if honcho.poll() is not None:
            raise ComponentError(f"honcho exited ({honcho.returncode}); see the stack log")
        for name, check in list(pending.items()):
            try:
                ok = check()
            except Exception:
                ok = False
            if ok:
                _log(f"{name} ready")
                del pending[name]
        if pending and time.monotonic() > deadline:
            raise ComponentError(f"not ready after {timeout:.0f} s: {', '.join(pending)}")
        time.sleep(0.5)


def _ports(free: bool) -> LocalPorts:
    if not free:
        return LocalPorts()
    return LocalPorts(**dict(zip([f.name for f in fields(LocalPorts)],
                                 free_ports(len(fields(LocalPorts))), strict=True)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state-dir", type=Path, default=STATE_DIR,
                        help="where data, logs and generated config live (default .local/)")
    parser.add_argument("--free-ports", action="store_true",
                        help="pick free ports instead of the fixed ones (tests)")
    parser.add_argument("--no-job", action="store_true", help="bring the stack up only")
    parser.add_argument("--movielens", type=Path,
                        help="load this MovieLens directory instead of synthetic data")
    parser.add_argument("--timeout", type=float, default=180, help="readiness timeout, s")
    args = parser.parse_args(argv)

    stack = local_stack(args.state_dir, _ports(args.free_ports), free_seaweed=args.free_ports)
    envoy = envoy_for(stack)
    envoy.prepare()
    write_procfile(stack, extra={**service_lines(stack.ports, service_env(stack)),
                                 "envoy": procfile_line(envoy)})
    log_path = stack.state_dir / "stack.log"
    _log(f"starting the local stack (logs: {log_path})")
    with log_path.open("ab") as log_file:
        honcho = subprocess.Popen(honcho_argv(stack), stdout=log_file, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        wait_ready(stack, envoy, honcho, args.timeout)
        urls = endpoints(stack, envoy)
        (stack.state_dir / "endpoints.json").write_text(json.dumps(urls, indent=2))
        if not args.no_job:
            from scripts.localstack.main_job import run_main_job

            run_main_job(urls, movielens=args.movielens)
        _log("recsys mesh is up:")
        for name, url in urls.items():
            print(f"  {name:<17} {url}")
        _log("serving until Ctrl-C")
        while not stopping and honcho.poll() is None:
            time.sleep(0.2)
        return 0 if stopping else 1
    finally:
        _log("stopping")
        if honcho.poll() is None:
            os.killpg(honcho.pid, signal.SIGTERM)
            try:
                honcho.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(honcho.pid, signal.SIGKILL)
                honcho.wait()
        _log("stopped")


if __name__ == "__main__":
    sys.exit(main())
