"""`python -m services.recommender` as deployed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from recsys.recommender.v1 import recommender_pb2, recommender_pb2_grpc
from scripts.localstack.components import MlflowServer, RedisServer, free_ports, tcp_open
from services.recommender.servicer import SERVICE_NAME
from tests.support.paths import REPO
from tests.support.polling import eventually

pytestmark = pytest.mark.integration


def test_without_a_champion_the_process_is_not_serving_and_refuses_rpcs(
        mlflow_server: MlflowServer, redis_server: RedisServer, model_name: str) -> None:
    port, metrics_port, kafka_port = free_ports(3)
    env = {**os.environ, "RECSYS_GRPC_PORT": str(port), "RECSYS_METRICS_PORT": str(metrics_port),
           "RECSYS_MLFLOW_TRACKING_URI": mlflow_server.tracking_uri,
           "RECSYS_MODEL_NAME": model_name, "RECSYS_REDIS_URL": redis_server.url,
           "RECSYS_KAFKA_BOOTSTRAP": f"127.0.0.1:{kafka_port}",
           "RECSYS_RECOMMENDER_HISTORY_CONSUMER": "false",
           "RECSYS_RECOMMENDER_CATALOG_CONSUMER": "false", "RECSYS_LOG_FORMAT": "json"}
    process = subprocess.Popen([sys.executable, "-m", "services.recommender"], cwd=REPO,
                               env=env, stderr=subprocess.PIPE, text=True)
    try:
        def listening() -> bool:
            if process.poll() is not None:
                pytest.fail(f"the recommender exited: {process.communicate()[1]}")
            return tcp_open(port)

        eventually(listening, timeout=60, what="the recommender's port open")
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
