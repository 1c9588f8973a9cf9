"""Bring the whole local stack up under honcho, optionally run the main job, serve until stopped.

    python -m scripts.localstack.up                 # stack + main job, then serve (Ctrl-C stops)
    python -m scripts.localstack.up --no-job        # stack only
    python -m scripts.localstack.up --movielens ../shared/datasets/ml-100k
    python -m scripts.localstack.up --plaintext     # no mutual TLS between gRPC hops

The stack: SeaweedFS S3 and the Tansu broker on it (durable), Redis, MLflow, Prometheus, the
three gRPC services and Envoy, each a line of one Procfile run by honcho, with every log line
in <state>/stack.log. When everything answers, <state>/endpoints.json lists where, and the
endpoints are printed. SIGINT or SIGTERM stops honcho, which stops every process.

Envoy runs as in production: TLS on its listener, a token with the route's scope on every
call, per-client rate limits. The certificates and the token signing key come from
<state>/pki (`scripts/localstack/pki.py`, created once, kept); <state>/security.json says
where they are. Every service requires a client certificate from that CA and lets only Envoy
and the admin identity (the CLI's certificate) call more than health; the main job's clients
(this process and the `recsys` commands it starts) get the admin's through the
RECSYS_CLI_TLS_* variables. --plaintext turns mutual TLS off (debugging with plain grpcurl).
MLflow runs its basic-auth app: the trainer and the recommender sign in with accounts of their
own (passwords generated into <state>/mlflow/users.json, 0600), the trainer's may write.
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
from scripts.localstack.pki import Pki, ensure_pki
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
from services.core.client import channel
from services.core.names import SERVICE_NAMES
from services.core.tls import ClientTLS
from services.edge.profiles import pki_security


def _log(message: str) -> None:
    print(f"\033[1m[stack]\033[0m {message}", flush=True)


def service_env(stack: LocalStack, *, mtls: Pki | None = None) -> dict[str, str]:
    """The settings that point the services at the stack's components (and, with `mtls`,
    turn on mutual TLS with that PKI's server certificate and CA)."""
    return {
        "RECSYS_KAFKA_BOOTSTRAP": stack.kafka.bootstrap,
        "RECSYS_MLFLOW_TRACKING_URI": stack.mlflow.tracking_uri,
        "RECSYS_REDIS_URL": stack.redis.url,
        "RECSYS_TRAINER_DATA_DIR": str(stack.state_dir / "trainer"),
        "RECSYS_LOG_FORMAT": "text",
        **(mtls.server_env() if mtls else {}),
    }


def envoy_for(stack: LocalStack, pki: Pki, *, mtls: bool = False) -> Envoy:
    p = stack.ports
    return Envoy(stack.state_dir / "envoy", port=p.envoy, admin_port=p.envoy_admin,
                 ingest=f"{HOST}:{p.ingest_grpc}", trainer=f"{HOST}:{p.trainer_grpc}",
                 recommender=f"{HOST}:{p.recommender_grpc}",
                 security=pki_security(pki.directory, mutual_tls=mtls))


def security_info(pki: Pki, *, mtls: bool) -> dict[str, object]:
    """<state>/security.json: what a client of this stack needs (paths, no secrets inline)."""
    info: dict[str, object] = {
        "mtls": mtls,
        "pki_dir": str(pki.directory),
        "ca_file": str(pki.ca_cert),
        "token_signing_key": str(pki.signing_key),
        "jwks": str(pki.jwks),
    }
    if mtls:
        info |= {"client_cert_file": str(pki.client_cert),
                 "client_key_file": str(pki.client_key)}
    return info


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


def _answers_health(target: str, service: str, *, serving: bool,
                    tls: ClientTLS | None = None) -> bool:
    with (grpc.insecure_channel(target) if tls is None else channel(target, tls=tls)) as chan:
        try:
            reply = health_pb2_grpc.HealthStub(chan).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=1
            )
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING or not serving


def wait_ready(stack: LocalStack, envoy: Envoy, honcho: subprocess.Popen[bytes],
               timeout: float, *, tls: ClientTLS | None = None) -> None:
    """Poll every component until it answers; fail early if honcho stopped."""
    p = stack.ports
    checks: dict[str, Callable[[], bool]] = {c.name: c.probe for c in stack.components}
    # The recommender is NOT_SERVING until a champion exists: answering is enough here.
    checks |= {
        name: (lambda t=f"{HOST}:{port}", s=service, need=(name != "recommender"):
               _answers_health(t, s, serving=need, tls=tls))
        for (name, service), port in zip(
            SERVICE_NAMES.items(), (p.ingest_grpc, p.trainer_grpc, p.recommender_grpc), strict=True)
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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state-dir", type=Path, default=STATE_DIR,
                        help="where data, logs and generated config live (default .local/)")
    parser.add_argument("--free-ports", action="store_true",
                        help="pick free ports instead of the fixed ones (tests)")
    parser.add_argument("--no-job", action="store_true", help="bring the stack up only")
    parser.add_argument("--movielens", type=Path,
                        help="load this MovieLens directory instead of synthetic data")
    parser.add_argument("--timeout", type=float, default=180, help="readiness timeout, s")
    parser.add_argument("--plaintext", dest="mtls", action="store_false",
                        help="turn off mutual TLS on the services' gRPC ports (on by default: "
                             "Envoy and the main job present client certificates)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)

    stack = local_stack(args.state_dir, _ports(args.free_ports), free_seaweed=args.free_ports)
    pki = ensure_pki(stack.state_dir / "pki")
    envoy = envoy_for(stack, pki, mtls=args.mtls)
    envoy.prepare()
    env = service_env(stack, mtls=pki if args.mtls else None)
    accounts = {name: stack.mlflow.service_env(name) for name in ("trainer", "recommender")}
    write_procfile(stack, extra={**service_lines(stack.ports, env, own=accounts),
                                 "envoy": procfile_line(envoy)})
    security = security_info(pki, mtls=args.mtls)
    (stack.state_dir / "security.json").write_text(json.dumps(security, indent=2))
    client_tls = None
    if args.mtls:
        # The main job's clients: channel() in this process, and the `recsys` commands it
        # starts, which inherit the environment.
        os.environ.update(pki.client_env())
        client_tls = ClientTLS.from_env()
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
        wait_ready(stack, envoy, honcho, args.timeout, tls=client_tls)
        stack.mlflow.create_users()  # the services' accounts; they retry until these exist
        urls = endpoints(stack, envoy)
        (stack.state_dir / "endpoints.json").write_text(json.dumps(urls, indent=2))
        if not args.no_job:
            from scripts.localstack.main_job import run_main_job

            run_main_job(urls, movielens=args.movielens, security=security)
        _log("recsys mesh is up:")
        for name, url in urls.items():
            print(f"  {name:<17} {url}")
        _log(f"Envoy asks for TLS and a token: TOKEN=$(.venv/bin/recsys token --scope "
             f"recommend:read --key-file {pki.signing_key}); curl --cacert {pki.ca_cert} "
             f"-H \"authorization: Bearer $TOKEN\" {envoy.url}/v1/model")
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
