"""kill -9 of `python -m services.trainer`, during consumption and during training: after a
restart the dataset holds every event exactly once, and the interrupted job is FAILED with no
alias moved."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from recsys.trainer.v1 import trainer_pb2, trainer_pb2_grpc
from scripts.localstack.components import MlflowServer, TansuBroker
from services.core.client import channel
from tests.support.polling import eventually
from tests.support.trainer_server import (
    NO_SEARCH,
    Ingested,
    TrainerProcess,
    store_event_ids,
    store_offsets,
    store_rows,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def process(kafka: TansuBroker, mlflow_server: MlflowServer, synthetic_topic: Ingested,
            tmp_path: Path) -> Iterator[TrainerProcess]:
    suffix = uuid.uuid4().hex[:8]
    trainer = TrainerProcess(tmp_path, environ={
        "RECSYS_KAFKA_BOOTSTRAP": kafka.bootstrap,
        "RECSYS_KAFKA_TOPIC": synthetic_topic.topic,
        "RECSYS_MLFLOW_TRACKING_URI": mlflow_server.tracking_uri,
        "RECSYS_MODEL_NAME": f"recsys-mf-crash-{suffix}",
        "RECSYS_TRAINER_MLFLOW_EXPERIMENT": f"trainer-crash-{suffix}",
        "RECSYS_TRAINER_CONSUMER_GROUP": f"trainer-crash-{suffix}",
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
    eventually(lambda: store_offsets(process.store_dir) == synthetic_topic.highwater,
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
