"""`python -m services.recommender` as deployed, and the `recsys` commands against a server."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from recsys.recommender.v1 import recommender_pb2, recommender_pb2_grpc
from scripts.localstack.components import MlflowServer, RedisServer, free_ports, tcp_open
from services.cli.__main__ import main as recsys
from services.recommender.servicer import SERVICE_NAME
from tests.integration.recommender.conftest import ReplicaFactory, publish
from tests.unit.recommender.artifacts import small_artifact

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]


def test_without_a_champion_the_process_is_not_serving_and_refuses_rpcs(
        mlflow_server: MlflowServer, redis_server: RedisServer, model_name: str) -> None:
    port, metrics_port, kafka_port = free_ports(3)
    env = {**os.environ, "RECSYS_GRPC_PORT": str(port), "RECSYS_METRICS_PORT": str(metrics_port),
           "RECSYS_MLFLOW_TRACKING_URI": mlflow_server.tracking_uri,
           "RECSYS_MODEL_NAME": model_name, "RECSYS_REDIS_URL": redis_server.url,
           "RECSYS_KAFKA_BOOTSTRAP": f"127.0.0.1:{kafka_port}",
           "RECSYS_RECOMMENDER_HISTORY_CONSUMER": "false", "RECSYS_LOG_FORMAT": "json"}
    process = subprocess.Popen([sys.executable, "-m", "services.recommender"], cwd=REPO,
                               env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not tcp_open(port):
            assert process.poll() is None, process.communicate()[1]
            assert time.monotonic() < deadline, "the recommender did not open its port"
            time.sleep(0.1)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=5)
            assert health.status == health_pb2.HealthCheckResponse.NOT_SERVING
            with pytest.raises(grpc.RpcError) as failure:
                recommender_pb2_grpc.RecommenderServiceStub(channel).Recommend(
                    recommender_pb2.RecommendRequest(user_id="u1"), timeout=5)
            assert failure.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert failure.value.details() == "no model loaded yet"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


async def test_recsys_commands(replica: ReplicaFactory, servers: dict[str, str], model_name: str,
                               tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    version = publish(servers["mlflow_tracking_uri"], model_name, small_artifact(), tmp_path)
    async with replica(**servers) as r:
        await r.wait_for_version(version)
        capsys.readouterr()  # MLflow's own messages from publishing

        async def run(*argv: str) -> tuple[int, str, str]:
            code = await asyncio.to_thread(recsys, [*argv, "--target", r.target])
            out, err = capsys.readouterr()
            return code, out, err

        code, out, _ = await run("recommend", "u1", "-k", "3")
        assert code == 0
        assert f"model version {version}, strategy personalized" in out
        assert len(out.splitlines()) == 5  # heading, column names, 3 items
        code, out, _ = await run("similar", "i4", "-k", "2")
        assert (code, len(out.splitlines())) == (0, 4)
        code, out, _ = await run("model-info")
        assert code == 0
        assert f"{model_name} version {version} (alias champion)" in out
        assert "60 users, 120 items, 8 factors" in out
        assert "scoring:     top lists ranked at load, else exact (every item)" in out
        code, _, err = await run("similar", "nope")
        assert code == 1
        assert err.startswith("recsys similar: error: NOT_FOUND: ")
