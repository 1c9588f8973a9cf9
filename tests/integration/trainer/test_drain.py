"""SIGTERM to `python -m services.trainer` while a job trains, as Kubernetes stops a pod: health
goes NOT_SERVING first, the job ends CANCELLED before the process exits (its watcher sees it,
no alias moves), and the process exits 0 without the grace period cutting any call short."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from recsys.trainer.v1 import trainer_pb2, trainer_pb2_grpc
from scripts.localstack.components import MlflowServer, TansuBroker
from services.core.client import channel
from tests.support.polling import eventually
from tests.support.service_process import NOT_SERVING, SERVING, HealthWatch
from tests.support.trainer_server import NO_SEARCH, Ingested, TrainerProcess, consumed

pytestmark = pytest.mark.integration


def test_sigterm_during_a_job_cancels_it_and_moves_no_alias(
    kafka: TansuBroker, mlflow_server: MlflowServer, synthetic_topic: Ingested, tmp_path: Path
) -> None:
    suffix = uuid.uuid4().hex[:8]
    name = f"recsys-mf-drain-{suffix}"
    trainer = TrainerProcess(tmp_path, environ={
        "RECSYS_KAFKA_BOOTSTRAP": kafka.bootstrap, "RECSYS_KAFKA_TOPIC": synthetic_topic.topic,
        "RECSYS_MLFLOW_TRACKING_URI": mlflow_server.tracking_uri, "RECSYS_MODEL_NAME": name,
        "RECSYS_TRAINER_MLFLOW_EXPERIMENT": f"trainer-drain-{suffix}",
        "RECSYS_TRAINER_CONSUMER_GROUP": f"trainer-drain-{suffix}"})
    trainer.start().wait_ready(60)
    try:
        eventually(lambda: consumed(trainer.store_dir, synthetic_topic),
                   timeout=120, what="the synthetic topic consumed")
        with channel(trainer.target) as chan:
            stub = trainer_pb2_grpc.TrainerServiceStub(chan)
            champion = stub.StartTrainingJob(trainer_pb2.StartTrainingJobRequest(
                hyperparameters=trainer_pb2.Hyperparameters(epochs=1), search=NO_SEARCH),
                timeout=10).job
            ended = [u.job for u in stub.WatchTrainingJob(
                trainer_pb2.WatchTrainingJobRequest(job_id=champion.job_id), timeout=300)][-1]
            assert ended.promoted, ended.promotion_reason

            job = stub.StartTrainingJob(trainer_pb2.StartTrainingJobRequest(
                hyperparameters=trainer_pb2.Hyperparameters(epochs=200), search=NO_SEARCH),
                timeout=10).job
            watch = stub.WatchTrainingJob(trainer_pb2.WatchTrainingJobRequest(
                job_id=job.job_id), timeout=300)
            seen: list[trainer_pb2.TrainingJob] = []
            training = threading.Event()

            def follow() -> None:
                for update in watch:
                    seen.append(update.job)
                    if update.job.epoch >= 1:
                        training.set()

            follower = threading.Thread(target=follow)
            with HealthWatch(trainer.target, trainer.service) as health:
                follower.start()
                assert training.wait(120), "the job never finished an epoch"
                assert trainer.terminate() == 0
                follower.join(30)
            assert health.statuses[0] == SERVING and health.statuses[-1] == NOT_SERVING
    finally:
        trainer.stop()

    # The watcher saw the job end, CANCELLED, before the stream closed: it ended while the
    # process still served, after health went NOT_SERVING, and no call was cut short.
    assert seen[-1].state == trainer_pb2.JOB_STATE_CANCELLED, seen[-1]
    assert not seen[-1].model_version
    messages = trainer.messages()
    assert "training job ended" in messages[messages.index("draining"):messages.index("drained")]
    assert trainer.last("drained")["cut_short"] == 0
    client = MlflowClient(tracking_uri=mlflow_server.tracking_uri,
                          registry_uri=mlflow_server.tracking_uri)
    assert client.get_model_version_by_alias(name, "champion").version == ended.model_version
    assert len(client.search_model_versions(f"name = '{name}'")) == 1
    assert client.get_run(seen[-1].mlflow_run_id).info.status == "KILLED"
