"""One training run: snapshot, fit, evaluate, log to MLflow, register, quality gate.

The registered model is fitted on the whole snapshot, so serving learns from (and excludes)
every known interaction. Its quality is estimated with the protocol (DESIGN.md): the same
hyper-parameters are fitted on the 75% split and ranked against the held-out 25%. Those
held-out metrics are what MLflow shows and what the quality gate compares.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from services.core.errors import FailedPrecondition, Unavailable
from services.model.lineage import Lineage
from services.model.versions import ARTIFACT_FILE, VersionInfo
from services.trainer import parquet_snapshot, search
from services.trainer.catch_up import wait_for_events
from services.trainer.dataset import DatasetStore, TrainingData
from services.trainer.distributed import DistributedFits
from services.trainer.evaluation import (
    evaluate,
    evaluation_sample,
    popularity,
    stratified_split,
)
from services.trainer.model import FactorModel, Interactions, TrainConfig, TrainingCancelled, fit
from services.trainer.object_store import ObjectStore
from services.trainer.packaging import package_model
from services.trainer.registry import ModelRegistry

if TYPE_CHECKING:
    from services.trainer.jobs import Job

GATE_METRIC = "ndcg_at_10"
Update = Callable[..., Any]


class Phase(StrEnum):
    """The steps of a run, in order."""

    WAITING_FOR_EVENTS = "waiting_for_events"
    SNAPSHOT = "snapshot"
    SEARCHING = "searching"
    TRAINING = "training"
    EVALUATING = "evaluating"
    LOGGING = "logging"
    DONE = "done"


@dataclass(frozen=True, kw_only=True)
class TrainingOptions:
    """What every run shares: where the data is, how it is weighed, the gate's thresholds."""

    topic: str
    type_weights: Mapping[str, float]
    min_ndcg: float
    gate_tolerance: float
    search: search.Defaults
    # Interactions the held-out evaluation covers at most (`evaluation.evaluation_sample`).
    evaluation_max_rows: int
    evaluation_max_users: int
    # Users x items up to which the artifact ships every user's top list (`package_model`).
    top_lists_max_cells: int
    wait_for_events_s: float
    # The end offset of each partition of the topic, read from the broker.
    end_offsets: Callable[[], Mapping[int, int]]
    # The catalogue topic: its offsets in the store (services.trainer.catalog_follower) go to
    # the lineage with the catalogue's counts and hash, so serving knows which erasures a
    # version postdates.
    catalog_topic: str = ""
    # Where each job exports its snapshot as Parquet (None: no export).
    snapshots: ObjectStore | None = None
    # Fits on a group of workers, for jobs with more than one (needs `snapshots`).
    distributed: DistributedFits | None = None
    # Workers of a job that does not ask, and the most it may ask for.
    workers: int = 1
    max_workers: int = 1


def quality_gate(
    score: float, champion: VersionInfo | None, *, floor: float, tolerance: float
) -> tuple[bool, str]:
    """Whether a model with held-out NDCG@10 `score` may become champion, and why.

    The floor always applies; with a champion, the score must also reach the champion's own
    NDCG@10 minus `tolerance`.
    """
    if score < floor:
        return False, f"{GATE_METRIC} {score:.4f} is below the floor {floor:.4f}"
    if champion is None:
        return True, f"first model: {GATE_METRIC} {score:.4f} reaches the floor {floor:.4f}"
    best = champion.metrics.get(GATE_METRIC)
    if best is None:
        return True, (f"champion v{champion.version} has no {GATE_METRIC}; "
                      f"{score:.4f} reaches the floor {floor:.4f}")
    verdict = "reaches" if score >= best - tolerance else "is below"
    return score >= best - tolerance, (
        f"{GATE_METRIC} {score:.4f} {verdict} champion v{champion.version}'s {best:.4f} "
        f"minus {tolerance:g}"
    )


class _Eta:
    """Seconds left, from the mean epoch time so far and the epochs both fits still need."""

    def __init__(self, epochs_total: int) -> None:
        self._total = epochs_total
        self._done = 0
        self._start = time.monotonic()

    def epoch_done(self) -> float:
        self._done += 1
        per_epoch = (time.monotonic() - self._start) / self._done
        return per_epoch * (self._total - self._done)


def run_training(job: Job, *, store: DatasetStore, registry: ModelRegistry,
                 options: TrainingOptions, update: Update,
                 cancelled: Callable[[], bool]) -> None:
    """Run `job` to the end, reporting each step through `update(**changes)` (job fields).

    Raises FailedPrecondition (nothing to train on), Unavailable (the broker, MLflow, or a
    dataset that does not catch up), TrainingCancelled.
    """
    if job.wait_for_events:
        update(phase=Phase.WAITING_FOR_EVENTS)
        wait_for_events(store, options.topic, _end_offsets(options), cancelled=cancelled,
                        timeout_s=options.wait_for_events_s,
                        report=lambda behind: update(events_behind=behind))
    update(phase=Phase.SNAPSHOT)
    snapshot = store.snapshot(options.topic, catalog_topic=options.catalog_topic)
    lineage = snapshot.lineage
    if lineage.row_count == 0:
        raise FailedPrecondition("the dataset is empty: no interaction events have been "
                                 "consumed yet")
    data = snapshot.training_data(options.type_weights)
    if not len(data):
        raise FailedPrecondition("no event in the dataset has a positive weight")
    update(lineage=lineage)

    full = Interactions.from_arrays(data.users, data.items, data.weights,
                                    n_users=len(data.user_ids), n_items=len(data.item_ids))
    # A snapshot exported for workers marks the protocol's test pairs of every user (their
    # holdout fit covers them all), so only a job without one samples its evaluation.
    evaluated = full if options.snapshots is not None else evaluation_sample(
        full, max_rows=options.evaluation_max_rows, max_users=options.evaluation_max_users)
    train, test = stratified_split(evaluated.users, evaluated.items, evaluated.weights,
                                   n_users=evaluated.n_users, n_items=evaluated.n_items)
    exported = None
    if options.snapshots is not None:
        exported = parquet_snapshot.export(options.snapshots, data, lineage=lineage,
                                           type_weights=options.type_weights, test=test)
        update(snapshot_uri=exported.uri)
    budget = options.search.budget(trials=job.trials, seconds=job.search_seconds)
    weighting = {f"type_weight.{k}": v for k, v in sorted(options.type_weights.items())}
    run_id = registry.start_run(
        job_id=job.job_id, lineage=lineage, tags={"recsys.trigger": job.trigger.value},
        params={**weighting, "pinned": ",".join(job.pinned) or "-",
                "search.trials": budget.trials, "search.seconds": budget.seconds or "default",
                "workers": job.workers})
    update(mlflow_run_id=run_id)
    if exported is not None:
        registry.log_dataset(run_id, source=exported.uri, digest=exported.manifest.key,
                             lineage=lineage)
    config = job.config
    if budget.trials and set(search.SEARCH_SPACE) - set(job.pinned):
        config = _search(job, train, registry, run_id=run_id, budget=budget,
                         options=options, update=update, cancelled=cancelled)
    registry.log_values(run_id, params=config.as_dict(), metrics={})
    update(config=config, phase=Phase.TRAINING)
    model, holdout = _fit_models(job, config, full, train, exported=exported, registry=registry,
                                 run_id=run_id, options=options, update=update,
                                 cancelled=cancelled)
    ranking = evaluate(holdout, train, test)
    metrics = {**ranking.as_dict(), "users_evaluated": float(ranking.users_evaluated),
               "evaluation_user_share": evaluated.n_users / max(full.n_users, 1),
               "popularity_ndcg_at_10": evaluate(popularity(train), train, test).ndcg}
    update(metrics=metrics, phase=Phase.LOGGING, eta_seconds=0.0)
    if cancelled():
        raise TrainingCancelled("cancelled before the model was registered")

    # Serving folds new users in with the same weights, so the version carries them.
    tags = {"recsys.job_id": job.job_id,
            **{f"recsys.{k}": repr(float(v)) for k, v in weighting.items()}}
    version = _register(model, full, data, registry, run_id=run_id, metrics=metrics,
                        lineage=lineage, tags=tags, top_lists_max_cells=options.top_lists_max_cells)
    update(model_version=version.version)
    passed, reason = quality_gate(metrics[GATE_METRIC], registry.champion(),
                                  floor=options.min_ndcg, tolerance=options.gate_tolerance)
    registry.tag(run_id, version.version, {"recsys.gate_passed": str(passed).lower(),
                                           "recsys.gate_reason": reason})
    registry.end_run(run_id, "FINISHED")
    if passed:  # last: a job that fails before this point never moved the alias
        registry.set_champion(version.version)
    update(promoted=passed, promotion_reason=reason, phase=Phase.DONE)


def _fit_models(job: Job, config: TrainConfig, full: Interactions, train: Interactions, *,
                exported: parquet_snapshot.Exported | None, registry: ModelRegistry,
                run_id: str, options: TrainingOptions, update: Update,
                cancelled: Callable[[], bool]) -> tuple[FactorModel, FactorModel]:
    """The served model (fitted on `full`) and the evaluation's (on `train`): in this
    process, or by the job's workers on its exported snapshot."""
    eta = _Eta(2 * config.epochs)

    def on_epoch(epoch: int, loss: float) -> None:
        registry.log_metric(run_id, "loss", loss, step=epoch)
        update(epoch=epoch, loss=loss, eta_seconds=eta.epoch_done())

    def on_holdout_epoch(epoch: int) -> None:
        update(phase=Phase.EVALUATING, eta_seconds=eta.epoch_done())

    if job.workers == 1:
        model = fit(full, config, on_epoch=lambda epoch, _, m: on_epoch(epoch, m.loss(full)),
                    should_cancel=cancelled)
        update(phase=Phase.EVALUATING)
        holdout = fit(train, config, on_epoch=lambda epoch, *_: on_holdout_epoch(epoch),
                      should_cancel=cancelled)
        return model, holdout
    assert options.distributed is not None and exported is not None  # JobManager.start
    result = options.distributed.fit(
        exported.uri, config, job_id=job.job_id, workers=job.workers, on_epoch=on_epoch,
        on_holdout_epoch=on_holdout_epoch, cancelled=cancelled)
    registry.log_values(run_id, params={}, metrics={
        "distributed_fit_seconds": result.progress.fit_seconds,
        "distributed_exchange_seconds": result.progress.exchange_seconds})
    return result.full, result.holdout


def _end_offsets(options: TrainingOptions) -> Mapping[int, int]:
    try:
        return options.end_offsets()
    except Exception as exc:  # the broker's client raises many kinds; all mean "not now"
        raise Unavailable(f"cannot read the end of {options.topic} from the broker "
                          f"({type(exc).__name__}); a job can skip the wait for events and "
                          "train on what the dataset holds") from exc


def _search(job: Job, train: Interactions, registry: ModelRegistry, *, run_id: str,
            budget: search.Budget, options: TrainingOptions, update: Update,
            cancelled: Callable[[], bool]) -> TrainConfig:
    """The hyper-parameters a search on `train` chooses; each trial is a nested MLflow run,
    the summary lands on the job's run."""
    champion = registry.champion()
    starts = search.starting_points(
        job.config, pinned=job.pinned,
        champion=champion.hyperparameters if champion is not None else {})
    update(phase=Phase.SEARCHING, eta_seconds=budget.seconds or 0.0)

    def on_trial(trial: search.Trial, progress: search.Progress) -> None:
        scores = {} if trial.validation_ndcg is None else {
            "validation_ndcg_at_10": trial.validation_ndcg}
        registry.log_trial(run_id, number=trial.number, pruned=trial.pruned,
                           params=_hyperparameters(trial.config),
                           metrics={**scores, "epochs_run": trial.epochs_run,
                                    "seconds": trial.seconds})
        update(search=progress,
               eta_seconds=max(progress.seconds_budget - progress.seconds, 0.0))

    result = search.search(train, starts=starts, pinned=job.pinned, budget=budget,
                           max_rows=options.search.max_rows, on_trial=on_trial,
                           should_cancel=cancelled)
    progress = result.progress
    registry.log_values(run_id, params={}, metrics={
        "search_trials": progress.trials_done, "search_pruned": progress.trials_pruned,
        "search_best_validation_ndcg_at_10": progress.best_validation_ndcg,
        "search_first_validation_ndcg_at_10": progress.first_validation_ndcg,
        "search_seconds": progress.seconds})
    update(search=progress)
    return result.config


def _hyperparameters(config: TrainConfig) -> dict[str, float]:
    """What a version records and the next search starts from (the seed is the job's)."""
    return {name: getattr(config, name) for name in search.SEARCH_SPACE}


def _register(model: FactorModel, full: Interactions, data: TrainingData,
              registry: ModelRegistry, *, run_id: str, metrics: Mapping[str, float],
              lineage: Lineage, tags: Mapping[str, str], top_lists_max_cells: int
              ) -> VersionInfo:
    """Save the served model as one .npz and register it as a new version."""
    artifact = package_model(model, full, user_ids=data.user_ids.tolist(),
                             item_ids=data.item_ids.tolist(),
                             top_lists_max_cells=top_lists_max_cells)
    with tempfile.TemporaryDirectory(prefix="recsys-model-") as tmp:
        path = Path(tmp) / ARTIFACT_FILE
        artifact.save(path)
        return registry.register(run_id, metrics=metrics, lineage=lineage, artifact=path,
                                 hyperparameters=_hyperparameters(model.config), tags=tags)
