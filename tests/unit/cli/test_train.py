from __future__ import annotations

import pytest

from recsys.model.v1 import model_pb2
from recsys.trainer.v1 import trainer_pb2
from services.cli.__main__ import build_parser
from services.cli.common import TRAINER
from services.cli.train import describe_job


def test_train_takes_hyperparameters_and_a_target(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TRAINER.env, raising=False)
    args = build_parser().parse_args(["train", "--factors", "8", "--alpha", "2.5", "--no-wait"])
    assert (args.factors, args.alpha, args.epochs, args.no_wait) == (8, 2.5, None, True)
    assert args.target == TRAINER.default


def test_the_target_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TRAINER.env, "trainer:1234")
    assert build_parser().parse_args(["models", "list"]).target == "trainer:1234"
    args = build_parser().parse_args(["models", "promote", "3", "--target", "x:1"])
    assert (args.version, args.target) == ("3", "x:1")


def test_describe_job() -> None:
    job = trainer_pb2.TrainingJob(
        job_id="j1", state=trainer_pb2.JOB_STATE_SUCCEEDED, model_version="4", promoted=False,
        promotion_reason="ndcg_at_10 0.3000 is below champion v3's 0.4900 minus 0.01",
        metrics=model_pb2.EvaluationMetrics(ndcg_at_10=0.3, precision_at_10=0.25,
                                            users_evaluated=943),
        lineage=model_pb2.DatasetLineage(row_count=100, user_count=3, item_count=4,
                                         content_hash="ab" * 32),
    )
    text = describe_job(job)
    assert text.splitlines()[0] == "job j1: succeeded"
    assert "NDCG@10 0.3000  P@10 0.2500" in text
    assert "100 events, 3 users, 4 items" in text
    assert "model version 4: not promoted (ndcg_at_10 0.3000 is below" in text


def test_a_failed_job_shows_its_error() -> None:
    job = trainer_pb2.TrainingJob(job_id="j2", state=trainer_pb2.JOB_STATE_FAILED,
                                  error="MLflow at http://x failed to start a run: refused")
    assert describe_job(job).splitlines() == [
        "job j2: failed", "  error: MLflow at http://x failed to start a run: refused"]
