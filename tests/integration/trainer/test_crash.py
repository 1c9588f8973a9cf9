"""kill -9 of `python -m services.trainer`, during consumption, during training, and between
registering a version and moving the alias to it: after a restart the dataset holds every
event exactly once, the interrupted job is FAILED, and the champion is the one it was."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from recsys.trainer.v1 import trainer_pb2, trainer_pb2_grpc
from scripts.localstack.components import MlflowServer, TansuBroker
from services.core.client import channel
from tests.support.mlflow_gate import AliasGate
from tests.support.polling import eventually
from tests.support.trainer_server import (
    NO_SEARCH,
    Ingested,
    TrainerProcess,
    consumed,
    store_event_ids,
    store_rows,
)

pytestmark = pytest.mark.integration


def trainer_environ(kafka: TansuBroker, tracking_uri: str, topic: str) -> dict[str, str]:
    """A trainer process' settings: its own registered model, experiment and consumer group."""
    suffix = uuid.uuid4().hex[:8]
    return {
        "RECSYS_KAFKA_BOOTSTRAP": kafka.bootstrap,
        "RECSYS_KAFKA_TOPIC": topic,
        "RECSYS_MLFLOW_TRACKING_URI": tracking_uri,
        "RECSYS_MODEL_NAME": f"recsys-mf-crash-{suffix}",
        "RECSYS_TRAINER_MLFLOW_EXPERIMENT": f"trainer-crash-{suffix}",
        "RECSYS_TRAINER_CONSUMER_GROUP": f"trainer-crash-{suffix}",
    }


@pytest.fixture
def process(kafka: TansuBroker, mlflow_server: MlflowServer, synthetic_topic: Ingested,
            tmp_path: Path) -> Iterator[TrainerProcess]:
    trainer = TrainerProcess(tmp_path, environ={
        **trainer_environ(kafka, mlflow_server.tracking_uri, synthetic_topic.topic),
        # Small transactions, so that a kill lands between two of them.
        "RECSYS_TRAINER_CONSUMER_BATCH": "100",
    })
    yield trainer
    trainer.stop()


def test_kill_during_consumption_and_training(
    process: TrainerProcess, mlflow_server: MlflowServer, synthetic_topic: Ingested
) -> None:
    process.start()
    eventually(lambda: store_rows(process.store_dir) > 0, timeout=120, what="first events")
    process.kill()
    at_kill = store_rows(process.store_dir)
    assert 0 < at_kill < synthetic_topic.events, "the kill must land during consumption"

    process.start().wait_ready(60)
    # The offsets commit with the rows: once they reach the topic's end, every record has
    # been read, and anything read twice has been stored (or ignored) by then.
    eventually(lambda: consumed(process.store_dir, synthetic_topic),
               timeout=120, what="consuming the rest after the restart")
    ids = store_event_ids(process.store_dir)
    assert len(ids) == synthetic_topic.events
    assert set(ids) == synthetic_topic.event_ids

    target = f"127.0.0.1:{process.port}"
    with channel(target) as chan:
        stub = trainer_pb2_grpc.TrainerServiceStub(chan)
        job = stub.StartTrainingJob(trainer_pb2.StartTrainingJobRequest(
            hyperparameters=trainer_pb2.Hyperparameters(epochs=200), search=NO_SEARCH),
            timeout=10).job
        watch = stub.WatchTrainingJob(trainer_pb2.WatchTrainingJobRequest(job_id=job.job_id),
                                      timeout=120)
        for update in watch:
            if update.job.epoch >= 1:
                break
        watch.cancel()
    process.kill()

    process.start().wait_ready(60)
    with channel(target) as chan:
        stub = trainer_pb2_grpc.TrainerServiceStub(chan)
        after = stub.GetTrainingJob(trainer_pb2.GetTrainingJobRequest(job_id=job.job_id),
                                    timeout=10).job
    assert after.state == trainer_pb2.JOB_STATE_FAILED
    assert after.error == "trainer restarted while the job ran"
    assert after.mlflow_run_id and not after.model_version

    client = MlflowClient(tracking_uri=mlflow_server.tracking_uri,
                          registry_uri=mlflow_server.tracking_uri)
    name = process.environ["RECSYS_MODEL_NAME"]
    assert client.search_model_versions(f"name = '{name}'") == []
    eventually(lambda: client.get_run(after.mlflow_run_id).info.status == "FAILED", timeout=30,
               what="the interrupted run marked FAILED")
    assert store_rows(process.store_dir) == synthetic_topic.events


def train(target: str, epochs: int) -> trainer_pb2.TrainingJob:
    """Start a job and follow it to its end."""
    with channel(target) as chan:
        stub = trainer_pb2_grpc.TrainerServiceStub(chan)
        job = stub.StartTrainingJob(trainer_pb2.StartTrainingJobRequest(
            hyperparameters=trainer_pb2.Hyperparameters(epochs=epochs)), timeout=10).job
        watch = stub.WatchTrainingJob(trainer_pb2.WatchTrainingJobRequest(job_id=job.job_id),
                                      timeout=300)
        return [update.job for update in watch][-1]


def test_kill_between_registering_a_version_and_promoting_it(
    kafka: TansuBroker, mlflow_server: MlflowServer, synthetic_topic: Ingested, tmp_path: Path
) -> None:
    with AliasGate(mlflow_server.tracking_uri) as gate:
        trainer = TrainerProcess(tmp_path, environ=trainer_environ(
            kafka, gate.url, synthetic_topic.topic))
        try:
            trainer.start().wait_ready(60)
            eventually(lambda: consumed(trainer.store_dir, synthetic_topic),
                       timeout=120, what="the synthetic topic consumed")
            first = train(trainer.target, epochs=2)
            assert first.state == trainer_pb2.JOB_STATE_SUCCEEDED and first.promoted

            gate.hold_alias_moves()
            with channel(trainer.target) as chan:
                job = trainer_pb2_grpc.TrainerServiceStub(chan).StartTrainingJob(
                    trainer_pb2.StartTrainingJobRequest(
                        hyperparameters=trainer_pb2.Hyperparameters(epochs=2)), timeout=10).job
            # The trainer asks MLflow to move the alias only after registering the version and
            # passing the gate: it is killed while that request is held.
            assert gate.held.wait(120), "the trainer never tried to move the alias"
            trainer.kill()

            client = MlflowClient(tracking_uri=mlflow_server.tracking_uri,
                                  registry_uri=mlflow_server.tracking_uri)
            name = trainer.environ["RECSYS_MODEL_NAME"]
            champion = client.get_model_version_by_alias(name, "champion")
            assert champion.version == first.model_version
            registered = {v.tags["recsys.job_id"]: v
                          for v in client.search_model_versions(f"name = '{name}'")}
            assert registered.keys() == {first.job_id, job.job_id}
            new = client.get_model_version(name, registered[job.job_id].version)
            assert new.aliases == [] and new.tags["recsys.gate_passed"] == "true"

            trainer.start().wait_ready(60)
            with channel(trainer.target) as chan:
                after = trainer_pb2_grpc.TrainerServiceStub(chan).GetTrainingJob(
                    trainer_pb2.GetTrainingJobRequest(job_id=job.job_id), timeout=10).job
            assert after.state == trainer_pb2.JOB_STATE_FAILED
            assert after.error == "trainer restarted while the job ran"
            assert after.model_version == new.version and not after.promoted
            assert client.get_model_version_by_alias(name, "champion").version == (
                first.model_version)
        finally:
            trainer.stop()
