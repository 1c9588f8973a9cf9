"""The trainer's side of a distributed fit: a run's spec, its workers, their progress and
their result, all through the object store.

A run lives in ``runs/<job_id>/`` under the store's root: the trainer writes ``spec.json``
(the snapshot and the hyper-parameters) and starts the workers with a `Launcher` (torchrun
processes here, an indexed Job in Kubernetes); worker 0 rewrites ``progress.json`` after
every epoch and writes ``factors.npz`` at the end. The object store is the only thing the
trainer and the workers share, so the same run works on one machine and across a cluster.

A worker that dies fails the group (torchrun, or the Job's backoff limit of 0, stops the
others); the trainer then stops whatever still runs and the job fails before it registers
anything, so no alias moves. The snapshot stays: the job can be started again on it.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Protocol

import numpy as np
import torch

from services.core.errors import Unavailable
from services.trainer.model import FactorModel, TrainConfig, TrainingCancelled
from services.trainer.object_store import ObjectStore

SPEC = "spec.json"
PROGRESS = "progress.json"
FACTORS = "factors.npz"


def run_folder(job_id: str) -> str:
    return f"runs/{job_id}"


@dataclass(frozen=True)
class RunSpec:
    """What the workers of a run fit: the snapshot (its manifest's URI), with what."""

    snapshot: str
    config: TrainConfig
    workers: int

    def to_json(self) -> bytes:
        return json.dumps({"snapshot": self.snapshot, "config": self.config.as_dict(),
                           "workers": self.workers}).encode()

    @classmethod
    def from_json(cls, data: bytes) -> RunSpec:
        body = json.loads(data)
        return cls(snapshot=body["snapshot"], config=TrainConfig(**body["config"]),
                   workers=body["workers"])


@dataclass(frozen=True)
class RunProgress:
    """Worker 0's report: the objective after each epoch of the served model's fit, the
    evaluation fit's epochs, and, once `done`, the seconds the fits and their collectives
    took."""

    losses: tuple[float, ...] = ()
    holdout_epochs: int = 0
    done: bool = False
    fit_seconds: float = 0.0
    exchange_seconds: float = 0.0

    def to_json(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def from_json(cls, data: bytes) -> RunProgress:
        body = json.loads(data)
        return cls(**{**body, "losses": tuple(body["losses"])})


@dataclass(frozen=True)
class RunResult:
    full: FactorModel
    holdout: FactorModel
    progress: RunProgress


def factors_to_bytes(full: FactorModel, holdout: FactorModel) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, full_users=full.user_factors.numpy(), full_items=full.item_factors.numpy(),
             holdout_users=holdout.user_factors.numpy(),
             holdout_items=holdout.item_factors.numpy())
    return buffer.getvalue()


class WorkerGroup(Protocol):
    """The workers of one run, as the launcher started them."""

    def poll(self) -> str | None:
        """None while they run; "" once all have exited successfully; else why they failed."""
        ...

    def stop(self) -> None:
        """Stop every worker that still runs (idempotent)."""
        ...


class Launcher(Protocol):
    def start(self, *, job_id: str, workers: int, run: str) -> WorkerGroup:
        """Start `workers` workers on run folder `run` (worker.py's argument)."""
        ...


@dataclass
class _Reported:
    """What the job has been told so far, so each epoch is reported once."""

    losses: int = 0
    holdout_epochs: int = 0


@dataclass
class DistributedFits:
    """Fits a job's models on a group of workers over its Parquet snapshot."""

    store: ObjectStore
    launcher: Launcher
    poll_s: float = 0.5

    def fit(self, snapshot: str, config: TrainConfig, *, job_id: str, workers: int,
            on_epoch: Callable[[int, float], None], on_holdout_epoch: Callable[[int], None],
            cancelled: Callable[[], bool]) -> RunResult:
        """The served model and the evaluation's, fitted by `workers` workers on `snapshot`.

        Raises Unavailable when a worker fails (naming which, and that the snapshot is
        kept), TrainingCancelled when `cancelled()` turns true; the workers are stopped
        either way.
        """
        run = run_folder(job_id)
        self.store.delete_tree(run)  # what an earlier try of this job left
        self.store.write(f"{run}/{SPEC}", RunSpec(snapshot, config, workers).to_json())
        group = self.launcher.start(job_id=job_id, workers=workers, run=run)
        reported = _Reported()
        try:
            while (outcome := group.poll()) is None:
                if cancelled():
                    raise TrainingCancelled("cancelled while the workers fitted")
                self._report(run, reported, on_epoch, on_holdout_epoch)
                time.sleep(self.poll_s)
            progress = self._report(run, reported, on_epoch, on_holdout_epoch)
            if outcome or progress is None or not progress.done:
                raise Unavailable(
                    f"distributed fit failed: {outcome or 'the workers ended without a result'}"
                    f". The snapshot {snapshot} is kept: start the job again to retry.")
        finally:
            group.stop()
        factors = np.load(io.BytesIO(self.store.read(f"{run}/{FACTORS}")))
        full, holdout = (FactorModel(torch.from_numpy(factors[f"{fit}_users"]),
                                     torch.from_numpy(factors[f"{fit}_items"]), config)
                         for fit in ("full", "holdout"))
        self.store.delete_tree(run)
        return RunResult(full, holdout, progress)

    def _report(self, run: str, reported: _Reported, on_epoch: Callable[[int, float], None],
                on_holdout_epoch: Callable[[int], None]) -> RunProgress | None:
        body = self.store.read_if_exists(f"{run}/{PROGRESS}")
        if body is None:
            return None
        try:
            progress = RunProgress.from_json(body)
        except ValueError:
            # A read racing worker 0's rewrite can get the old object's length of the new
            # one (the store reads by size, then the bytes); the next poll reads it whole,
            # and the last one, after the workers ended, has nothing to race.
            return None
        for epoch in range(reported.losses + 1, len(progress.losses) + 1):
            on_epoch(epoch, progress.losses[epoch - 1])
        for epoch in range(reported.holdout_epochs + 1, progress.holdout_epochs + 1):
            on_holdout_epoch(epoch)
        reported.losses, reported.holdout_epochs = len(progress.losses), progress.holdout_epochs
        return progress
