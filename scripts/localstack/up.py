"""Bring the whole local stack up under supervisord, optionally run the main job, serve until
stopped.

    python -m scripts.localstack.up                 # stack + main job, then serve (Ctrl-C stops)
    python -m scripts.localstack.up --no-job        # stack only
    python -m scripts.localstack.up --movielens ../shared/datasets/ml-100k
    python -m scripts.localstack.up --plaintext     # no mutual TLS between gRPC hops
    python -m scripts.localstack.up --replicas 2    # two ingest and two recommender replicas

The stack: SeaweedFS S3 and the Tansu broker on it (durable), Redis, MLflow, Prometheus, the
three gRPC services and Envoy, each a program of supervisord (`scripts/localstack/supervisor.py`),
which restarts whichever exits while the others keep running; restarts are printed here and
counted in <state>/restarts.json, each program's output is in <state>/logs/. When everything
answers, <state>/endpoints.json lists where, and the endpoints are printed. SIGINT or SIGTERM
stops supervisord, which stops every program in reverse start order, each with its own grace
period (the services drain).

With --replicas 2, ingest and the recommender run twice (the second replicas' ports are in
endpoints.json as ingest_2_grpc and recommender_2_grpc), and Envoy balances over both, health-
checked, retrying idempotent calls on the other one: `Supervisor(state).restart("ingest")`
(or `supervisorctl -c <state>/supervisord.conf restart ingest`) restarts one replica while the
other serves.

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
import contextlib
import functools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path

from scripts.localstack.components import HOST, ComponentError, free_ports, http_ok
from scripts.localstack.envoy import Envoy
from scripts.localstack.pki import Pki, ensure_pki
from scripts.localstack.procfile import (
    SERVICES,
    STATE_DIR,
    LocalPorts,
    LocalStack,
    local_stack,
    procfile_line,
    service_lines,
)
from scripts.localstack.readiness import SERVING, health
from scripts.localstack.supervisor import (
    Program,
    Supervisor,
    component_programs,
    supervisord_argv,
    write_config,
)
from services.core.names import SERVICE_NAMES
from services.core.tls import ClientTLS
from services.edge.clusters import HEALTH_CHECK_INTERVAL_S, HEALTH_CHECK_TIMEOUT_S
from services.edge.profiles import pki_security

#: How long supervisord may take to stop every program before it is killed.
STOP_TIMEOUT_S = 120


def _log(message: str) -> None:
    print(f"\033[1m[stack]\033[0m {message}", flush=True)


def service_env(stack: LocalStack, *, mtls: Pki | None = None,
                replicas: int = 1) -> dict[str, str]:
    """The settings that point the services at the stack's components (and, with `mtls`,
    turn on mutual TLS with that PKI's server certificate and CA)."""
    env = {
        "RECSYS_KAFKA_BOOTSTRAP": stack.kafka.bootstrap,
        "RECSYS_MLFLOW_TRACKING_URI": stack.mlflow.tracking_uri,
        "RECSYS_REDIS_URL": stack.redis.url,
        "RECSYS_TRAINER_DATA_DIR": str(stack.state_dir / "trainer"),
        "RECSYS_LOG_FORMAT": "text",
        **(mtls.server_env() if mtls else {}),
    }
    if replicas > 1:
        # What a pod's preStop sleep does in Kubernetes: a stopping replica serves on until
        # Envoy's health checks have seen it NOT_SERVING and send its calls to the other one.
        env["RECSYS_SHUTDOWN_DELAY_S"] = str(HEALTH_CHECK_INTERVAL_S + HEALTH_CHECK_TIMEOUT_S)
    return env


def envoy_for(stack: LocalStack, pki: Pki, *, mtls: bool = False, replicas: int = 1) -> Envoy:
    p = stack.ports

    def upstream(service: str) -> str:  # every replica: Envoy balances over them
        return ",".join(f"{HOST}:{port}" for port, _ in p.replicas(service, replicas))

    return Envoy(stack.state_dir / "envoy", port=p.envoy, admin_port=p.envoy_admin,
                 ingest=upstream("ingest"), trainer=upstream("trainer"),
                 recommender=upstream("recommender"),
                 security=pki_security(pki.directory, mutual_tls=mtls))


def programs(stack: LocalStack, envoy: Envoy, env: dict[str, str], *,
             replicas: int = 1) -> list[Program]:
    """Every program, in start order: the components, the services (their grace period as in
    Kubernetes: terminationGracePeriodSeconds), Envoy."""
    # Each service's own MLflow account: the trainer may write, the recommender only read.
    accounts = {name: stack.mlflow.service_env(name) for name in ("trainer", "recommender")}
    services = service_lines(stack.ports, env, replicas=replicas, own=accounts)
    return [*component_programs(stack),
            *(Program(name, line, priority=60 + n, stop_wait_s=30)
              for n, (name, line) in enumerate(services.items())),
            Program("envoy", procfile_line(envoy), priority=90)]


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


def endpoints(stack: LocalStack, envoy: Envoy, *, replicas: int = 1) -> dict[str, str]:
    p = stack.ports
    grpc_ports = {f"{service}{'' if n == 0 else f'_{n + 1}'}_grpc": f"{HOST}:{grpc_port}"
                  for service in SERVICES
                  for n, (grpc_port, _) in enumerate(p.replicas(service, replicas))}
    return {
        **grpc_ports,
        "rest_base_url": envoy.url,
        "envoy_grpc": envoy.target,
        "envoy_admin": envoy.admin_url,
        "mlflow_ui": stack.mlflow.tracking_uri,
        "prometheus_ui": stack.prometheus.url,
        "kafka_bootstrap": stack.kafka.bootstrap,
        "redis_url": stack.redis.url,
        "metrics": ", ".join(
            f"http://{HOST}:{metrics_port}/metrics"
            for service in SERVICES for _, metrics_port in p.replicas(service, replicas)
        ),
    }


def _answers_health(target: str, service: str, *, serving: bool,
                    tls: ClientTLS | None = None) -> bool:
    status = health(target, service, tls=tls, timeout=1)
    return status == SERVING or (status is not None and not serving)


def wait_ready(stack: LocalStack, envoy: Envoy, supervisord: subprocess.Popen[bytes],
               timeout: float, *, tls: ClientTLS | None = None, replicas: int = 1) -> None:
    """Poll every component until it answers; fail early if supervisord stopped."""
    checks: dict[str, Callable[[], bool]] = {c.name: c.probe for c in stack.components}
    # The recommender is NOT_SERVING until a champion exists: answering is enough here.
    for name, target in endpoints(stack, envoy, replicas=replicas).items():
        if name.endswith("_grpc") and name != "envoy_grpc":
            service = name.split("_")[0]
            checks[name] = functools.partial(_answers_health, target, SERVICE_NAMES[service],
                                             serving=service != "recommender", tls=tls)
    checks["envoy"] = lambda: http_ok(envoy.admin_port, "/ready")
    deadline = time.monotonic() + timeout
    pending = dict(checks)
    while pending:
        if supervisord.poll() is not None:
            raise ComponentError(f"supervisord exited ({supervisord.returncode}); see "
                                 f"{stack.state_dir / 'stack.log'}")
        for name, check in list(pending.items()):
            try:
                ok = check()
            except Exception:
                ok = False
            if ok:
                _log(f"{name.removesuffix('_grpc').replace('_', '-')} ready")
                del pending[name]
        if pending and time.monotonic() > deadline:
            raise ComponentError(f"not ready after {timeout:.0f} s: {', '.join(pending)} "
                                 f"(logs in {stack.state_dir / 'logs'})")
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
    parser.add_argument("--replicas", type=int, choices=(1, 2), default=1,
                        help="replicas of ingest and of the recommender, behind Envoy")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)

    stack = local_stack(args.state_dir, _ports(args.free_ports), free_seaweed=args.free_ports,
                        replicas=args.replicas)
    pki = ensure_pki(stack.state_dir / "pki")
    envoy = envoy_for(stack, pki, mtls=args.mtls, replicas=args.replicas)
    envoy.prepare()
    env = service_env(stack, mtls=pki if args.mtls else None, replicas=args.replicas)
    write_config(stack, programs(stack, envoy, env, replicas=args.replicas))
    security = security_info(pki, mtls=args.mtls)
    (stack.state_dir / "security.json").write_text(json.dumps(security, indent=2))
    client_tls = None
    if args.mtls:
        # The main job's clients: channel() in this process, and the `recsys` commands it
        # starts, which inherit the environment.
        os.environ.update(pki.client_env())
        client_tls = ClientTLS.from_env()
    _log(f"starting the local stack under supervisord (logs: {stack.state_dir / 'logs'})")
    with (stack.state_dir / "stack.log").open("ab") as log_file:
        supervisord = subprocess.Popen(supervisord_argv(stack.state_dir), stdout=log_file,
                                       stderr=subprocess.STDOUT, start_new_session=True)
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        wait_ready(stack, envoy, supervisord, args.timeout, tls=client_tls,
                   replicas=args.replicas)
        stack.mlflow.create_users()  # the services' accounts; they retry until these exist
        urls = endpoints(stack, envoy, replicas=args.replicas)
        (stack.state_dir / "endpoints.json").write_text(json.dumps(urls, indent=2))
        if not args.no_job:
            from scripts.localstack.main_job import run_main_job

            run_main_job(urls, movielens=args.movielens, security=security)
        _log("recsys mesh is up:")
        for name, url in urls.items():
            print(f"  {name:<19} {url}")
        _log(f"Envoy asks for TLS and a token: TOKEN=$(.venv/bin/recsys token --scope "
             f"recommend:read --key-file {pki.signing_key}); curl --cacert {pki.ca_cert} "
             f"-H \"authorization: Bearer $TOKEN\" {envoy.url}/v1/model")
        _log("serving until Ctrl-C")
        _serve(Supervisor(stack.state_dir), supervisord, lambda: stopping)
        return 0 if stopping else 1
    finally:
        _log("stopping")
        _stop(supervisord, stack.state_dir)
        _log("stopped")


def _serve(control: Supervisor, supervisord: subprocess.Popen[bytes],
           stopping: Callable[[], bool]) -> None:
    """Until told to stop (or supervisord is gone), print each restart as it is counted."""
    reported: dict[str, int] = {}
    while not stopping() and supervisord.poll() is None:
        for name, count in control.restarts().items():
            if count != reported.get(name, 0):
                _log(f"{name} restarted ({count} so far): it exited; see "
                     f"{control.state_dir / 'logs' / f'{name}.log'}")
                reported[name] = count
        time.sleep(0.2)


def _stop(supervisord: subprocess.Popen[bytes], state_dir: Path) -> None:
    """SIGTERM to supervisord, which stops every program, each within its stop_wait_s; past
    STOP_TIMEOUT_S, SIGKILL to it and to each program's process group."""
    if supervisord.poll() is not None:
        return
    try:
        groups = Supervisor(state_dir).process_groups()
    except OSError:  # not listening yet: nothing started that it would not stop itself
        groups = []
    supervisord.send_signal(signal.SIGTERM)
    try:
        supervisord.wait(STOP_TIMEOUT_S)
        return
    except subprocess.TimeoutExpired:
        os.killpg(supervisord.pid, signal.SIGKILL)
        supervisord.wait()
    for pgid in groups:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)


if __name__ == "__main__":
    sys.exit(main())
