"""SIGTERM to `python -m services.recommender` under load, as Kubernetes stops a pod: health goes
NOT_SERVING first, every call the server had taken in is answered (the grace period cuts none
short), later calls are refused without being run, and it exits 0."""

from __future__ import annotations

import random
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from recsys.recommender.v1 import recommender_pb2, recommender_pb2_grpc
from scripts.localstack.components import MlflowServer, RedisServer, free_port
from tests.support.artifacts import small_artifact
from tests.support.model_registry import publish
from tests.support.polling import eventually
from tests.support.service_process import NOT_SERVING, SERVING, HealthWatch, LoggedService

pytestmark = pytest.mark.integration

CLIENTS = 8


def load(target: str, stop: threading.Event) -> Counter[str]:
    """Recommend for random users until told to stop or a call fails; outcomes by status."""
    outcomes: Counter[str] = Counter()
    rng = random.Random()
    with grpc.insecure_channel(target) as chan:
        stub = recommender_pb2_grpc.RecommenderServiceStub(chan)
        while not stop.is_set():
            request = recommender_pb2.RecommendRequest(user_id=f"u{rng.randrange(60)}", k=5)
            try:
                stub.Recommend(request, timeout=10)
            except grpc.RpcError as error:
                outcomes[error.code().name] += 1
                break
            outcomes["OK"] += 1
    return outcomes


def test_sigterm_under_load_answers_every_accepted_call(
    mlflow_server: MlflowServer, redis_server: RedisServer, model_name: str, tmp_path: Path
) -> None:
    publish(mlflow_server.tracking_uri, model_name, small_artifact(), tmp_path / "models")
    recommender = LoggedService(tmp_path / "recommender", "recommender", environ={
        "RECSYS_MLFLOW_TRACKING_URI": mlflow_server.tracking_uri,
        "RECSYS_MODEL_NAME": model_name, "RECSYS_REDIS_URL": redis_server.url,
        "RECSYS_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}",
        "RECSYS_RECOMMENDER_HISTORY_CONSUMER": "false"})
    recommender.start().wait_ready(90)
    stop = threading.Event()
    try:
        with HealthWatch(recommender.target, recommender.service) as health, \
                ThreadPoolExecutor(CLIENTS) as pool:
            clients = [pool.submit(load, recommender.target, stop) for _ in range(CLIENTS)]
            eventually(lambda: recommender.metric("grpc_server_handled_total",
                                                  grpc_method="Recommend") > 200,
                       timeout=60, what="Recommend load on the server")
            assert recommender.terminate() == 0
            stop.set()
            outcomes = sum((client.result() for client in clients), Counter[str]())
        assert health.statuses[0] == SERVING and health.statuses[-1] == NOT_SERVING
    finally:
        stop.set()
        recommender.stop()

    messages = recommender.messages()
    assert messages.index("draining") < messages.index("drained") < messages.index("stopped")
    # Calls the service had taken in: all answered, none left for the grace period to cut.
    assert recommender.last("drained")["cut_short"] == 0
    # The others were never run: gRPC cancels calls that reach a stopping server before it
    # hands them to the service (CANCELLED), then refuses connections (UNAVAILABLE). Both are
    # safe to retry on another replica, as Envoy does (services/edge).
    assert outcomes.keys() <= {"OK", "CANCELLED", "UNAVAILABLE"}, outcomes
    assert outcomes["OK"] > 200
