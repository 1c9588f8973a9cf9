from __future__ import annotations

import pytest

from recsys.model.v1 import model_pb2
from recsys.trainer.v1 import trainer_pb2
from services.cli.__main__ import build_parser
from services.cli.common import TRAINER
from services.cli.train import describe_job, progress_line


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


def test_search_options(monkeypatch: pytest.MonkeyPatch) -> None:
    parse = build_parser().parse_args
    args = parse(["train", "--trials", "5", "--search-seconds", "30", "--reg-exponent", "0.5"])
    assert (args.trials, args.search_seconds, args.reg_exponent) == (5, 30.0, 0.5)
    assert not args.skip_wait_for_events
    assert parse(["train", "--no-search", "--skip-wait-for-events"]).trials == 0
    assert parse(["train"]).trials is None
    assert parse(["train", "--workers", "2"]).workers == 2
    assert parse(["train"]).workers is None
    with pytest.raises(SystemExit):
        parse(["train", "--no-search", "--trials", "3"])


def test_progress_names_the_phase_and_counts_what_it_does() -> None:
    queued = trainer_pb2.TrainingJob(state=trainer_pb2.JOB_STATE_QUEUED, epochs=8)
    assert progress_line(queued) == "queued"
    searching = trainer_pb2.TrainingJob(
        state=trainer_pb2.JOB_STATE_RUNNING, phase=trainer_pb2.JOB_PHASE_SEARCHING,
        search=trainer_pb2.SearchProgress(trials_done=3, trials_budget=40, trials_pruned=1,
                                          best_validation_ndcg=0.25,
                                          first_validation_ndcg=0.2))
    assert progress_line(searching) == (
        "searching: 3/40, best validation NDCG@10 0.2500 (first 0.2000), 1 pruned")
    waiting = trainer_pb2.TrainingJob(state=trainer_pb2.JOB_STATE_RUNNING,
                                      phase=trainer_pb2.JOB_PHASE_WAITING_FOR_EVENTS,
                                      events_behind=120)
    assert progress_line(waiting) == "waiting_for_events: 120 events behind"
    training = trainer_pb2.TrainingJob(state=trainer_pb2.JOB_STATE_RUNNING,
                                       phase=trainer_pb2.JOB_PHASE_TRAINING, epoch=2,
                                       epochs=8, loss=0.5, eta_seconds=3)
    assert progress_line(training) == "training: 2/8, loss 0.5000, eta 3s"
