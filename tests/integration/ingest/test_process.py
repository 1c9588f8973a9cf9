"""`python -m services.ingest` as operators run it: health, reflection via grpcurl, signals."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from scripts.localstack.components import TansuBroker, free_port, free_ports
from services.ingest.servicer import SERVICE
from tests.support.paths import REPO
from tests.support.polling import eventually

pytestmark = pytest.mark.integration

GRPCURL = shutil.which("grpcurl", path=str(Path(sys.executable).parent)) or shutil.which("grpcurl")


def spawn(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "services.ingest"], cwd=REPO, text=True,
        env={**os.environ, "RECSYS_LOG_FORMAT": "json", **env},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def health(port: int) -> int | None:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            return health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=SERVICE), timeout=1).status
        except grpc.RpcError:
            return None


def wait_health(port: int, status: int) -> None:
    name = health_pb2.HealthCheckResponse.ServingStatus.Name(status)
    eventually(lambda: health(port) == status, timeout=30, what=f"health of {SERVICE} {name}")


@pytest.fixture
def server_env(kafka: TansuBroker) -> Iterator[dict[str, str]]:
    grpc_port, metrics_port = free_ports(2)
    yield {"RECSYS_KAFKA_BOOTSTRAP": kafka.bootstrap, "RECSYS_GRPC_PORT": str(grpc_port),
           "RECSYS_METRICS_PORT": str(metrics_port),
           "RECSYS_KAFKA_TOPIC": f"interactions-{uuid.uuid4().hex[:10]}",
           "RECSYS_INGEST_HEALTH_INTERVAL_S": "0.2"}


@pytest.mark.skipif(GRPCURL is None, reason="grpcurl is not installed")
def test_the_server_process_serves_health_and_reflection_and_stops_on_sigterm(
    server_env: dict[str, str],
) -> None:
    port = int(server_env["RECSYS_GRPC_PORT"])
    process = spawn(server_env)
    try:
        wait_health(port, health_pb2.HealthCheckResponse.SERVING)

        def grpcurl(*args: str) -> str:
            done = subprocess.run([str(GRPCURL), "-plaintext", *args], capture_output=True,
                                  text=True, timeout=20, check=True)
            return done.stdout

        services = grpcurl(f"127.0.0.1:{port}", "list").split()
        assert {SERVICE, "grpc.health.v1.Health"} <= set(services)
        assert "rpc StreamInteractions ( stream" in grpcurl(f"127.0.0.1:{port}", "describe",
                                                            SERVICE)
        event = {"interaction": {"userId": "u1", "itemId": "i1", "type": "INTERACTION_TYPE_VIEW",
                                 "occurredAt": "2024-05-01T12:00:00Z"}}
        answer = json.loads(grpcurl("-d", json.dumps(event), f"127.0.0.1:{port}",
                                    f"{SERVICE}/CreateInteraction"))
        assert len(answer["event_id"]) == 32  # grpcurl prints proto field names
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=20)
    assert process.returncode == 0, stderr
    logged = [json.loads(line)["msg"] for line in stderr.splitlines() if line.startswith("{")]
    assert "shutting down" in logged and "stopped" in logged


def test_the_server_starts_without_a_broker_reports_not_serving_and_serves_once_it_is_up(
    server_env: dict[str, str], tmp_path: Path,
) -> None:
    port, kafka_port = int(server_env["RECSYS_GRPC_PORT"]), free_port()
    process = spawn({**server_env, "RECSYS_KAFKA_BOOTSTRAP": f"127.0.0.1:{kafka_port}"})
    try:
        wait_health(port, health_pb2.HealthCheckResponse.NOT_SERVING)
        assert process.poll() is None
        # Its broker checks go on failing and it stays up and honest: the proof is that a
        # later check finds the broker once there is one.
        with TansuBroker(tmp_path / "tansu", port=kafka_port):
            wait_health(port, health_pb2.HealthCheckResponse.SERVING)
            assert process.poll() is None
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=20)
    assert process.returncode == 0


@pytest.mark.parametrize(("variable", "value", "message"), [
    ("RECSYS_INGEST_MAX_BATCH", "5000", "RECSYS_INGEST_MAX_BATCH=5000: must be 1 to 1,000"),
    ("RECSYS_INGEST_RATING_MIN", "6", "RECSYS_INGEST_RATING_MIN=6.0 is above"),
    ("RECSYS_INGEST_MIN_OCCURRED_AT", "1995-01-01",
     "RECSYS_INGEST_MIN_OCCURRED_AT='1995-01-01': must be an ISO 8601 instant"),
    ("RECSYS_INGEST_BATCH_SIZE", "10", "unknown setting RECSYS_INGEST_BATCH_SIZE"),
])
def test_a_bad_setting_stops_the_process_with_one_line(
    server_env: dict[str, str], variable: str, value: str, message: str
) -> None:
    process = spawn({**server_env, variable: value})
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 2
    assert len(stderr.strip().splitlines()) == 1
    assert message in stderr
