"""The trainer image, run as its workload against the real broker and MLflow: it consumes a
topic into its volume, trains through the RPC and registers a champion; confinement; SIGTERM."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from recsys.trainer.v1 import trainer_pb2
from tests.support.containers import CONFINED, Trained

pytestmark = pytest.mark.images


def test_the_trainer_image_trains_a_champion_and_stops_on_sigterm(trained: Trained) -> None:
    job = trained.job
    assert job.state == trainer_pb2.JOB_STATE_SUCCEEDED, job.error
    assert job.promoted, job.promotion_reason
    assert job.lineage.row_count == trained.topic.events
    client = MlflowClient(tracking_uri=trained.mlflow_tracking_uri,
                          registry_uri=trained.mlflow_tracking_uri)
    champion = client.get_model_version_by_alias(trained.model_name, "champion")
    assert champion.version == job.model_version
    trainer = trained.trainer
    assert trainer.confinement() == CONFINED
    assert trainer.terminate() == 0, trainer.logs()
    assert "stopped" in trainer.logged()
