from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from services.core.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from services.model.versions import CHAMPION
from services.trainer.dataset import DatasetStore
from services.trainer.dataset_catalog import CatalogUser, CatalogWrites
from services.trainer.hyperparameters import SEARCH_SPACE
from services.trainer.jobs import (
    RESTARTED,
    Job,
    JobManager,
    JobRequest,
    JobState,
    Trigger,
    resolve_config,
)
from services.trainer.metrics import TrainerMetrics
from services.trainer.model import TrainConfig
from services.trainer.search import Defaults, Progress
from services.trainer.settings import DEFAULT_TYPE_WEIGHTS
from services.trainer.training import Phase, TrainingOptions
from tests.support.polling import eventually_async
from tests.support.trainer_fakes import FakeRegistry, clustered_events

SMALL = TrainConfig(factors=4, epochs=3, seed=1)
TOPIC = "interactions"


def manager(store: DatasetStore, registry: FakeRegistry, metrics: TrainerMetrics, *,
            min_ndcg: float = 0.05, trials: int = 0, **options: Any) -> JobManager:
    """Jobs on `store`, whose stored offsets are the topic's end (nothing to wait for) unless
    `options` say otherwise; no hyper-parameter search unless `trials`."""
    return JobManager(store, registry, metrics, defaults=SMALL, options=TrainingOptions(**{
        "topic": TOPIC, "type_weights": DEFAULT_TYPE_WEIGHTS, "min_ndcg": min_ndcg,
        "gate_tolerance": 0.01, "wait_for_events_s": 5.0, "evaluation_max_rows": 2_000_000,
        "evaluation_max_users": 1_000_000,
        "top_lists_max_cells": 10**10,
        "search": Defaults(trials=trials, trial_multiple=100.0, max_seconds=60.0,
                           max_rows=1_000_000),
        "end_offsets": lambda: store.offsets(TOPIC), **options}))


async def finished(jobs: JobManager, job_id: str) -> Job:
    seen = [job async for job in jobs.watch(job_id)]
    return seen[-1]


@pytest.mark.parametrize(("overrides", "field"), [
    ({"factors": 0}, "hyperparameters.factors"),
    ({"factors": 1025}, "hyperparameters.factors"),
    ({"epochs": 201}, "hyperparameters.epochs"),
    ({"regularization": 0.0}, "hyperparameters.regularization"),
    ({"alpha": -1.0}, "hyperparameters.alpha"),
    ({"alpha": float("nan")}, "hyperparameters.alpha"),
    ({"seed": -1}, "hyperparameters.seed"),
    ({"init_std": 1.0}, "hyperparameters.init_std"),
])
def test_bad_overrides_name_their_field(overrides: dict[str, float], field: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        resolve_config(SMALL, overrides)
    assert caught.value.field == field


def test_overrides_replace_defaults_field_by_field() -> None:
    config = resolve_config(SMALL, {"factors": 8, "alpha": 2.5})
    assert (config.factors, config.alpha, config.epochs) == (8, 2.5, SMALL.epochs)


def test_job_json_round_trip() -> None:
    job = Job(job_id="j", trigger=Trigger.SCHEDULE, config=SMALL, created_at=1.5,
              state=JobState.RUNNING, phase=Phase.TRAINING, metrics={"ndcg_at_10": 0.5},
              pinned=("alpha",), trials=3, search_seconds=9.0, wait_for_events=False,
              search=Progress(trials_done=2, trials_budget=3, trials_pruned=1,
                              best_validation_ndcg=0.4, first_validation_ndcg=0.3,
                              seconds=1.0, seconds_budget=9.0), events_behind=7)
    assert Job.from_json(job.to_json()) == job


@pytest.mark.parametrize(("request_", "field"), [
    (JobRequest(trials=-1), "search.trials"),
    (JobRequest(trials=1001), "search.trials"),
    (JobRequest(search_seconds=0.0), "search.seconds"),
    (JobRequest(search_seconds=float("inf")), "search.seconds"),
])
def test_bad_search_budgets_name_their_field(request_: JobRequest, field: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        request_.validate()
    assert caught.value.field == field


async def test_a_job_searches_then_trains_with_what_the_search_chose(
    filled_store: DatasetStore, fake_registry: FakeRegistry, metrics: TrainerMetrics
) -> None:
    jobs = manager(filled_store, fake_registry, metrics, trials=4)
    await jobs.open()
    job = await jobs.start(JobRequest(pinned={"epochs": 3}))
    states = [j async for j in jobs.watch(job.job_id)]
    final = states[-1]
    assert final.state is JobState.SUCCEEDED, final.error
    assert Phase.SEARCHING in {s.phase for s in states}
    assert final.search is not None and final.search.trials_done == 4
    run = fake_registry.runs[final.mlflow_run_id]
    assert [t["number"] for t in run["trials"]] == [0, 1, 2, 3]
    assert all(t["params"]["epochs"] == 3 for t in run["trials"])
    assert run["params"]["factors"] == final.config.factors
    assert ("search_trials", 4, 0) in run["metrics"]
    assert fake_registry.versions[0].hyperparameters["alpha"] == final.config.alpha


async def test_a_job_whose_searched_values_are_all_pinned_does_not_search(
    filled_store: DatasetStore, fake_registry: FakeRegistry, metrics: TrainerMetrics
) -> None:
    jobs = manager(filled_store, fake_registry, metrics, trials=4)
    await jobs.open()
    pinned = {name: getattr(SMALL, name) for name in SEARCH_SPACE}
    final = await finished(jobs, (await jobs.start(JobRequest(pinned=pinned))).job_id)
    assert final.state is JobState.SUCCEEDED, final.error
    assert final.search is None and "trials" not in fake_registry.runs[final.mlflow_run_id]
    assert final.config == SMALL


async def test_the_next_search_starts_from_the_champion(
    filled_store: DatasetStore, fake_registry: FakeRegistry, metrics: TrainerMetrics
) -> None:
    jobs = manager(filled_store, fake_registry, metrics, trials=2)
    await jobs.open()
    first = await finished(jobs, (await jobs.start(JobRequest(trials=0, pinned={
        "factors": 6, "alpha": 3.0}))).job_id)
    assert first.promoted
    second = await finished(jobs, (await jobs.start(JobRequest())).job_id)
    trial = fake_registry.runs[second.mlflow_run_id]["trials"][0]
    assert (trial["params"]["factors"], trial["params"]["alpha"]) == (6, 3.0)


async def test_a_job_waits_for_the_events_acknowledged_before_it(
    store: DatasetStore, fake_registry: FakeRegistry, metrics: TrainerMetrics
) -> None:
    events = clustered_events()
    store.append(events[:100], topic=TOPIC, next_offsets={0: 100})
    jobs = manager(store, fake_registry, metrics, end_offsets=lambda: {0: len(events)})
    await jobs.open()
    job = await jobs.start(JobRequest())

    async def waiting() -> Job | None:
        now = await jobs.get(job.job_id)
        return now if now.phase is Phase.WAITING_FOR_EVENTS and now.events_behind else None

    waiting_job = await eventually_async(waiting, timeout=10, what="the job waiting")
    assert waiting_job.events_behind == len(events) - 100
    store.append(events[100:], topic=TOPIC, next_offsets={0: len(events)})
    final = await finished(jobs, job.job_id)
    assert final.state is JobState.SUCCEEDED, final.error
    assert final.lineage is not None and final.lineage.row_count == len(events)
    assert final.events_behind == 0


async def test_a_job_that_cannot_catch_up_fails_naming_the_gap(
    filled_store: DatasetStore, fake_registry: FakeRegistry, metrics: TrainerMetrics
) -> None:
    jobs = manager(filled_store, fake_registry, metrics, wait_for_events_s=0.3,
                   end_offsets=lambda: {0: 10**6})
    await jobs.open()
    final = await finished(jobs, (await jobs.start(JobRequest())).job_id)
    assert final.state is JobState.FAILED
    assert f"{10**6 - filled_store.row_count} events behind" in final.error
    skipped = await finished(jobs, (await jobs.start(JobRequest(wait_for_events=False))).job_id)
    assert skipped.state is JobState.SUCCEEDED, skipped.error


async def test_a_job_without_the_broker_fails_unless_it_skips_the_wait(
    filled_store: DatasetStore, fake_registry: FakeRegistry, metrics: TrainerMetrics
) -> None:
    def unreachable() -> dict[int, int]:
        raise ConnectionError("refused")

    jobs = manager(filled_store, fake_registry, metrics, end_offsets=unreachable)
    await jobs.open()
    final = await finished(jobs, (await jobs.start(JobRequest())).job_id)
    assert final.state is JobState.FAILED
    assert "cannot read the end of interactions" in final.error


async def test_a_job_runs_to_the_end_and_the_first_good_model_becomes_champion(
    filled_store: DatasetStore, fake_registry: FakeRegistry, metrics: TrainerMetrics
) -> None:
    filled_store.apply_catalog(CatalogWrites(users={"u1": CatalogUser("u1", ("de",))}),
                               topic="catalog", next_offsets={0: 1})
    jobs = manager(filled_store, fake_registry, metrics, catalog_topic="catalog")
    await jobs.open()
    job = await jobs.start(JobRequest(pinned={"epochs": 4}))
    assert job.state is JobState.QUEUED
    states = [j async for j in jobs.watch(job.job_id)]
    final = states[-1]
    assert final.state is JobState.SUCCEEDED, final.error
    assert final.phase is Phase.DONE
    assert {Phase.TRAINING, Phase.EVALUATING} <= {s.phase for s in states}
    assert (final.epoch, final.epochs) == (4, 4)
    assert final.metrics["ndcg_at_10"] > 0.2
    assert final.lineage is not None and final.lineage.row_count == filled_store.row_count
    assert (final.lineage.catalog_offsets, final.lineage.catalog_user_count) == ({0: 1}, 1)
    assert fake_registry.versions[0].lineage == final.lineage
    assert final.promoted and final.model_version == "1"
    assert fake_registry.champion_version == "1"
    run = fake_registry.runs[final.mlflow_run_id]
    assert [step for key, _, step in run["metrics"] if key == "loss"] == [1, 2, 3, 4]
    assert run["status"] == "FINISHED"
    assert run["params"]["factors"] == 4 and run["params"]["type_weight.purchase"] == 5.0
    assert run["artifact"].n_users == 40
    assert run["version_tags"]["recsys.job_id"] == job.job_id
    assert await jobs.get(job.job_id) == final
    assert (await jobs.recent(10))[0] == final
    assert metrics.jobs.labels("succeeded")._value.get() == 1
    assert metrics.last_metric.labels("ndcg_at_10")._value.get() == final.metrics["ndcg_at_10"]


async def test_beyond_its_size_the_evaluation_samples_users(
    filled_store: DatasetStore, fake_registry: FakeRegistry, metrics: TrainerMetrics
) -> None:
    exact = manager(filled_store, fake_registry, metrics)
    await exact.open()
    whole = await finished(exact, (await exact.start(JobRequest())).job_id)
    assert whole.metrics["evaluation_user_share"] == 1.0
    jobs = manager(filled_store, fake_registry, metrics,
                   evaluation_max_rows=filled_store.row_count // 3)
    await jobs.open()
    sampled = await finished(jobs, (await jobs.start(JobRequest())).job_id)
    assert sampled.state is JobState.SUCCEEDED, sampled.error
    assert 0 < sampled.metrics["evaluation_user_share"] < 1
    assert 0 < sampled.metrics["users_evaluated"] < whole.metrics["users_evaluated"]
    few = manager(filled_store, fake_registry, metrics, evaluation_max_users=5)
    await few.open()
    by_users = await finished(few, (await few.start(JobRequest())).job_id)
    assert by_users.state is JobState.SUCCEEDED, by_users.error
    assert by_users.metrics["users_evaluated"] <= 5 < whole.metrics["users_evaluated"]


async def test_a_worse_model_is_registered_but_not_promoted(
    filled_store: DatasetStore, fake_registry: FakeRegistry, metrics: TrainerMetrics
) -> None:
    jobs = manager(filled_store, fake_registry, metrics)
    await jobs.open()
    good = await finished(jobs, (await jobs.start(JobRequest())).job_id)
    worse_request = JobRequest(pinned={"factors": 1, "epochs": 1, "regularization": 1000.0})
    worse = await finished(jobs, (await jobs.start(worse_request)).job_id)
    assert worse.state is JobState.SUCCEEDED
    assert worse.model_version == "2" and not worse.promoted
    assert "is below champion v1" in worse.promotion_reason
    assert fake_registry.champion_version == good.model_version == "1"
    assert fake_registry.runs[worse.mlflow_run_id]["tags"]["recsys.gate_passed"] == "false"


async def test_the_floor_keeps_a_poor_first_model_out(
    filled_store: DatasetStore, fake_registry: FakeRegistry, metrics: TrainerMetrics
) -> None:
    jobs = manager(filled_store, fake_registry, metrics, min_ndcg=0.99)
    await jobs.open()
    final = await finished(jobs, (await jobs.start(JobRequest())).job_id)
    assert final.state is JobState.SUCCEEDED and not final.promoted
    assert "below the floor" in final.promotion_reason
    assert fake_registry.champion_version is None


async def test_one_job_at_a_time_and_cancel_at_an_epoch_boundary(
    filled_store: DatasetStore, fake_registry: FakeRegistry, metrics: TrainerMetrics
) -> None:
    fake_registry.hold = threading.Event()
    jobs = manager(filled_store, fake_registry, metrics)
    await jobs.open()
    job = await jobs.start(JobRequest(pinned={"epochs": 50}))
    await asyncio.to_thread(fake_registry.in_epoch.wait, 10)
    with pytest.raises(AlreadyExists, match=job.job_id):
        await jobs.start(JobRequest())
    assert (await jobs.cancel(job.job_id)).state is JobState.RUNNING
    fake_registry.hold.set()
    final = await finished(jobs, job.job_id)
    assert final.state is JobState.CANCELLED
    assert final.epoch < 50
    assert fake_registry.runs[final.mlflow_run_id]["status"] == "KILLED"
    assert fake_registry.champion_version is None
    with pytest.raises(FailedPrecondition, match="already ended"):
        await jobs.cancel(job.job_id)


async def test_an_empty_dataset_is_a_failed_precondition(
    store: DatasetStore, fake_registry: FakeRegistry, metrics: TrainerMetrics
) -> None:
    jobs = manager(store, fake_registry, metrics)
    await jobs.open()
    with pytest.raises(FailedPrecondition, match="empty"):
        await jobs.start(JobRequest())


async def test_unknown_jobs_are_not_found(
    store: DatasetStore, fake_registry: FakeRegistry, metrics: TrainerMetrics
) -> None:
    jobs = manager(store, fake_registry, metrics)
    await jobs.open()
    with pytest.raises(NotFound):
        await jobs.get("nope")
    with pytest.raises(NotFound):
        await anext(jobs.watch("nope"))


async def test_mlflow_down_fails_the_job_and_promotes_nothing(
    filled_store: DatasetStore, fake_registry: FakeRegistry, metrics: TrainerMetrics
) -> None:
    fake_registry.fail = True
    jobs = manager(filled_store, fake_registry, metrics)
    await jobs.open()
    final = await finished(jobs, (await jobs.start(JobRequest())).job_id)
    assert final.state is JobState.FAILED
    assert final.error.startswith("MLflow at http://127.0.0.1:1")
    assert fake_registry.champion_version is None
    assert metrics.jobs.labels("failed")._value.get() == 1


async def test_a_job_left_running_by_a_crash_is_reported_failed(
    filled_store: DatasetStore, fake_registry: FakeRegistry, metrics: TrainerMetrics
) -> None:
    run_id = fake_registry.start_run(job_id="j", params={}, lineage=None, tags={})  # type: ignore[arg-type]
    crashed = Job(job_id="j", trigger=Trigger.REQUEST, config=SMALL, created_at=time.time(),
                  state=JobState.RUNNING, phase=Phase.TRAINING, epoch=2, mlflow_run_id=run_id)
    filled_store.save_job("j", created_at=crashed.created_at, state="running",
                          body=crashed.to_json())
    jobs = manager(filled_store, fake_registry, metrics)
    await jobs.open()
    job = await jobs.get("j")
    assert job.state is JobState.FAILED
    assert job.error == RESTARTED
    assert job.finished_at is not None
    assert metrics.jobs.labels("failed")._value.get() == 1
    await eventually_async(lambda: fake_registry.runs[run_id]["status"] == "FAILED", timeout=10,
                           what="the MLflow run ended, in the background")
    assert fake_registry.champion_version is None


async def test_triggers_start_jobs_after_new_events(
    filled_store: DatasetStore, fake_registry: FakeRegistry, metrics: TrainerMetrics
) -> None:
    jobs = manager(filled_store, fake_registry, metrics)
    await jobs.open()
    assert jobs._due(new_events=10, interval_min=0) is Trigger.NEW_EVENTS
    assert jobs._due(new_events=10_000, interval_min=0) is None
    triggers = asyncio.create_task(jobs.run_triggers(new_events=10, interval_min=0))

    async def triggered() -> Job | None:  # it may have ended already: look at the list
        newest = await jobs.recent(1)
        return newest[0] if newest and newest[0].trigger is Trigger.NEW_EVENTS else None

    try:
        job = await eventually_async(triggered, timeout=10, what="a job started by the trigger")
        assert job.trigger is Trigger.NEW_EVENTS
        final = await finished(jobs, job.job_id)
        assert final.state is JobState.SUCCEEDED
        assert jobs._due(new_events=10, interval_min=0.0001) is None  # nothing new since
    finally:
        triggers.cancel()


async def test_schedule_fires_only_when_new_events_arrived(
    filled_store: DatasetStore, fake_registry: FakeRegistry, metrics: TrainerMetrics
) -> None:
    jobs = manager(filled_store, fake_registry, metrics)
    await jobs.open()
    jobs._last_job_at -= 120
    assert jobs._due(new_events=0, interval_min=1) is Trigger.SCHEDULE
    assert jobs._due(new_events=0, interval_min=5) is None
    jobs._rows_at_last_job = filled_store.row_count
    assert jobs._due(new_events=0, interval_min=1) is None


def test_champion_alias_name() -> None:
    assert CHAMPION == "champion"
    assert CollectorRegistry is not None
