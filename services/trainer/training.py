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
from typing import Any

from services.core.errors import FailedPrecondition
from services.model.lineage import Lineage
from services.model.versions import ARTIFACT_FILE, VersionInfo
from services.trainer.dataset import DatasetStore, TrainingData
from services.trainer.evaluation import evaluate, stratified_split
from services.trainer.model import FactorModel, Interactions, TrainConfig, TrainingCancelled, fit
from services.trainer.packaging import package_model
from services.trainer.registry import ModelRegistry

GATE_METRIC = "ndcg_at_10"
Update = Callable[..., Any]


class Phase(StrEnum):
    """The steps of a run, in order."""

    SNAPSHOT = "snapshot"
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


def run_training(
    *,
    job_id: str,
    config: TrainConfig,
    trigger: str,
    store: DatasetStore,
    registry: ModelRegistry,
    options: TrainingOptions,
    update: Update,
    cancelled: Callable[[], bool],
) -> None:
    """Run a job to the end, reporting each step through `update(**changes)` (job fields).

    Raises FailedPrecondition (nothing to train on), Unavailable (MLflow), TrainingCancelled.
    """
    update(phase=Phase.SNAPSHOT)
    snapshot = store.snapshot(options.topic)
    lineage = snapshot.lineage
    if lineage.row_count == 0:
        raise FailedPrecondition("the dataset is empty: no interaction events have been "
                                 "consumed yet")
    data = snapshot.training_data(options.type_weights)
    if not len(data):
        raise FailedPrecondition("no event in the dataset has a positive weight")
    update(lineage=lineage)

    weighting = {f"type_weight.{k}": v for k, v in sorted(options.type_weights.items())}
    run_id = registry.start_run(job_id=job_id, params={**config.as_dict(), **weighting},
                                lineage=lineage, tags={"recsys.trigger": trigger})
    update(mlflow_run_id=run_id, phase=Phase.TRAINING)
    eta = _Eta(2 * config.epochs)

    def on_epoch(epoch: int, epochs: int, loss: float) -> None:
        registry.log_metric(run_id, "loss", loss, step=epoch)
        update(epoch=epoch, loss=loss, eta_seconds=eta.epoch_done())

    def on_holdout_epoch(epoch: int, epochs: int, loss: float) -> None:
        registry.log_metric(run_id, "holdout_loss", loss, step=epoch)
        update(eta_seconds=eta.epoch_done())

    full = Interactions.from_arrays(data.users, data.items, data.weights,
                                    n_users=len(data.user_ids), n_items=len(data.item_ids))
    model = fit(full, config, on_epoch=on_epoch, should_cancel=cancelled)

    update(phase=Phase.EVALUATING)
    train, test = stratified_split(data.users, data.items, data.weights,
                                   n_users=len(data.user_ids), n_items=len(data.item_ids))
    holdout = fit(train, config, on_epoch=on_holdout_epoch, should_cancel=cancelled)
    ranking = evaluate(holdout, train, test)
    metrics = {**ranking.as_dict(), "users_evaluated": float(ranking.users_evaluated)}
    update(metrics=metrics, phase=Phase.LOGGING, eta_seconds=0.0)
    if cancelled():
        raise TrainingCancelled("cancelled before the model was registered")

    # Serving folds new users in with the same weights, so the version carries them.
    tags = {"recsys.job_id": job_id,
            **{f"recsys.{k}": repr(float(v)) for k, v in weighting.items()}}
    version = _register(model, full, data, registry, run_id=run_id, metrics=metrics,
                        lineage=lineage, tags=tags)
    update(model_version=version.version)
    passed, reason = quality_gate(metrics[GATE_METRIC], registry.champion(),
                                  floor=options.min_ndcg, tolerance=options.gate_tolerance)
    registry.tag(run_id, version.version, {"recsys.gate_passed": str(passed).lower(),
                                           "recsys.gate_reason": reason})
    registry.end_run(run_id, "FINISHED")
    if passed:  # last: a job that fails before this point never moved the alias
        registry.set_champion(version.version)
    update(promoted=passed, promotion_reason=reason, phase=Phase.DONE)


def _register(model: FactorModel, full: Interactions, data: TrainingData,
              registry: ModelRegistry, *, run_id: str, metrics: Mapping[str, float],
              lineage: Lineage, tags: Mapping[str, str]) -> VersionInfo:
    """Save the served model as one .npz and register it as a new version."""
    artifact = package_model(model, full, user_ids=data.user_ids.tolist(),
                             item_ids=data.item_ids.tolist())
    with tempfile.TemporaryDirectory(prefix="recsys-model-") as tmp:
        path = Path(tmp) / ARTIFACT_FILE
        artifact.save(path)
        return registry.register(run_id, metrics=metrics, lineage=lineage, artifact=path,
                                 tags=tags)
