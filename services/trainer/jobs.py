"""Training jobs: the state machine, one job at a time, watchers, cancel, automatic triggers.

A job runs `training.run_training` in a worker thread, so the event loop keeps serving. Each
change replaces the job (an immutable value), is saved in the dataset store and is handed to
the job's watchers. Jobs that were queued or running when the process died are reported
FAILED at the next start; the alias only moves at the very end of a job, so none moved.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import math
import secrets
import threading
import time
from collections.abc import AsyncIterator, Coroutine, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from services.core.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    RecsysError,
)
from services.model.lineage import Lineage
from services.trainer.dataset import DatasetStore
from services.trainer.hyperparameters import OutOfBounds
from services.trainer.metrics import TrainerMetrics
from services.trainer.model import TrainConfig, TrainingCancelled
from services.trainer.registry import ModelRegistry, RunStatus
from services.trainer.search import MAX_SECONDS, MAX_TRIALS, Progress
from services.trainer.training import Phase, TrainingOptions, run_training

log = logging.getLogger(__name__)

RESTARTED = "trainer restarted while the job ran"

# Hyper-parameters a request may override: the fields of trainer.proto's Hyperparameters.
# Their bounds are services/trainer/hyperparameters.py's, checked by TrainConfig.validate.
OVERRIDES = frozenset({"factors", "epochs", "regularization", "reg_exponent", "alpha", "seed"})
_TRIGGER_CHECK_S = 1.0
_CLOSE_WAIT_S = 30.0


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


class Trigger(StrEnum):
    REQUEST = "request"
    NEW_EVENTS = "new_events"
    SCHEDULE = "schedule"


@dataclass(frozen=True, kw_only=True)
class JobRequest:
    """What a job is asked for: pinned hyper-parameters (used as given, left out of the
    search), overrides of the search budget and of the workers (None: the trainer's
    defaults), and whether it first waits for the events acknowledged before it started."""

    pinned: Mapping[str, int | float] = field(default_factory=dict)
    trials: int | None = None
    search_seconds: float | None = None
    wait_for_events: bool = True
    workers: int | None = None  # None: the trainer's default

    def validate(self) -> None:
        """InvalidArgument naming the first bad field (the pinned values: `resolve_config`)."""
        if self.trials is not None and not 0 <= self.trials <= MAX_TRIALS:
            raise InvalidArgument("search.trials", f"must be 0 to {MAX_TRIALS}, "
                                                   f"got {self.trials}")
        seconds = self.search_seconds
        if seconds is not None and not (math.isfinite(seconds) and 0 < seconds <= MAX_SECONDS):
            raise InvalidArgument("search.seconds", f"must be > 0 and <= {MAX_SECONDS:g}, "
                                                    f"got {seconds}")


@dataclass(frozen=True)
class Job:
    """One training job as clients see it; every change makes a new value. `config` is what
    the job trains with: the defaults and the pinned values, then the search's choice."""

    job_id: str
    trigger: Trigger
    config: TrainConfig
    created_at: float
    pinned: tuple[str, ...] = ()
    trials: int | None = None
    search_seconds: float | None = None
    wait_for_events: bool = True
    workers: int = 1
    snapshot_uri: str = ""
    search: Progress | None = None
    events_behind: int = 0
    state: JobState = JobState.QUEUED
    phase: Phase | None = None
    epoch: int = 0
    loss: float = 0.0
    eta_seconds: float = 0.0
    metrics: Mapping[str, float] = field(default_factory=dict)
    lineage: Lineage | None = None
    mlflow_run_id: str = ""
    model_version: str = ""
    promoted: bool = False
    promotion_reason: str = ""
    error: str = ""
    started_at: float | None = None
    finished_at: float | None = None

    @property
    def epochs(self) -> int:
        return self.config.epochs

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        data["config"] = self.config.as_dict()
        data["lineage"] = self.lineage.as_dict() if self.lineage else None
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> Job:
        data: dict[str, Any] = json.loads(text)
        known = {f.name for f in dataclasses.fields(TrainConfig)}
        data["config"] = TrainConfig(**{k: v for k, v in data["config"].items() if k in known})
        data["lineage"] = Lineage.from_dict(data["lineage"]) if data["lineage"] else None
        data["trigger"] = Trigger(data["trigger"])
        data["state"] = JobState(data["state"])
        data["phase"] = Phase(data["phase"]) if data["phase"] else None
        data["pinned"] = tuple(data.get("pinned", ()))
        data["search"] = Progress(**data["search"]) if data.get("search") else None
        return cls(**data)


def resolve_config(defaults: TrainConfig, overrides: Mapping[str, int | float]) -> TrainConfig:
    """`defaults` with `overrides` applied; InvalidArgument names the first bad field."""
    for name in overrides:
        if name not in OVERRIDES:
            raise InvalidArgument(f"hyperparameters.{name}", "cannot be overridden")
    config = replace(defaults, **dict[str, Any](overrides))
    try:
        config.validate()
    except OutOfBounds as exc:
        raise InvalidArgument(f"hyperparameters.{exc.name}", exc.reason) from None
    return config


def _new_job_id() -> str:
    """Sortable by creation time and readable in a terminal, e.g. 20250301-101500-3fa2c1."""
    return f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{secrets.token_hex(3)}"


class _Subscription:
    """A watcher's view: the newest value of its job and a wake-up flag."""

    def __init__(self, job: Job) -> None:
        self.latest = job
        self.changed = asyncio.Event()


class JobManager:
    """Creates and runs jobs; the only writer of job state."""

    def __init__(
        self,
        store: DatasetStore,
        registry: ModelRegistry,
        metrics: TrainerMetrics,
        *,
        defaults: TrainConfig,
        options: TrainingOptions,
    ) -> None:
        self._store = store
        self._registry = registry
        self._metrics = metrics
        self._defaults = defaults
        self._options = options
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()  # guards _current between the worker and the loop
        self._start_lock = asyncio.Lock()
        self._current: Job | None = None  # the running job, or the last one this process ran
        self._cancel = threading.Event()
        self._task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._watchers: dict[str, set[_Subscription]] = {}
        self._rows_at_last_job = 0
        self._last_job_at = time.time()

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        """Report jobs a previous process left unfinished as FAILED; remember the last job."""
        self._loop = asyncio.get_running_loop()
        interrupted = await asyncio.to_thread(self._fail_interrupted)
        for job in interrupted:
            log.warning("job interrupted by a restart", extra={"job_id": job.job_id})
            self._metrics.jobs.labels(JobState.FAILED.value).inc()
            if job.mlflow_run_id:
                self._spawn(self._end_run_quietly(job.mlflow_run_id, "FAILED"))
        newest = await asyncio.to_thread(self._store.load_jobs, limit=1)
        if newest:
            last = Job.from_json(newest[0])
            self._rows_at_last_job = last.lineage.row_count if last.lineage else 0
            self._last_job_at = last.created_at

    def _fail_interrupted(self) -> list[Job]:
        now = time.time()
        states = (JobState.QUEUED, JobState.RUNNING)
        jobs = [Job.from_json(body) for body in self._store.load_jobs(states=states)]
        failed = [replace(job, state=JobState.FAILED, error=RESTARTED, eta_seconds=0.0,
                          finished_at=now) for job in jobs]
        for job in failed:
            self._save(job)
        return failed

    async def close(self) -> None:
        """Cancel the running job and wait (bounded) for it to stop at an epoch boundary."""
        for task in list(self._background):
            task.cancel()
        if self._task is not None and not self._task.done():
            self._cancel.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._task), _CLOSE_WAIT_S)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- queries ---------------------------------------------------------------------------

    @property
    def running(self) -> Job | None:
        current = self._current
        return current if current is not None and not current.state.finished else None

    async def get(self, job_id: str) -> Job:
        current = self._current
        if current is not None and current.job_id == job_id:
            return current
        body = await asyncio.to_thread(self._store.load_job, job_id)
        if body is None:
            raise NotFound(f"training job {job_id} not found")
        return Job.from_json(body)

    async def recent(self, limit: int) -> list[Job]:
        """The newest `limit` jobs, newest first."""
        bodies = await asyncio.to_thread(self._store.load_jobs, limit=limit)
        jobs = [Job.from_json(body) for body in bodies]
        current = self._current  # fresher than its last save, which may still be in flight
        return [current if current and job.job_id == current.job_id else job for job in jobs]

    async def watch(self, job_id: str) -> AsyncIterator[Job]:
        """The job now, then each new value until it has finished."""
        job = await self.get(job_id)
        subscription = _Subscription(job)
        self._watchers.setdefault(job_id, set()).add(subscription)
        try:
            latest = await self.get(job_id)  # a change may have landed before subscribing
            yield latest
            while not latest.state.finished:
                await subscription.changed.wait()
                subscription.changed.clear()
                if subscription.latest != latest:
                    latest = subscription.latest
                    yield latest
        finally:
            watchers = self._watchers.get(job_id, set())
            watchers.discard(subscription)
            if not watchers:
                self._watchers.pop(job_id, None)

    # -- commands --------------------------------------------------------------------------

    async def start(self, request: JobRequest, *, trigger: Trigger = Trigger.REQUEST) -> Job:
        config = resolve_config(self._defaults, request.pinned)
        request.validate()
        workers = self._workers(request.workers)
        async with self._start_lock:
            running = self.running
            if running is not None:
                raise AlreadyExists(f"training job {running.job_id} is already running; "
                                    "wait for it or cancel it")
            if self._store.row_count == 0:
                raise FailedPrecondition("the dataset is empty: no interaction events have "
                                         "been consumed yet")
            job = Job(job_id=_new_job_id(), trigger=trigger, config=config,
                      created_at=time.time(), pinned=tuple(sorted(request.pinned)),
                      trials=request.trials, search_seconds=request.search_seconds,
                      wait_for_events=request.wait_for_events, workers=workers)
            await asyncio.to_thread(self._save, job)
            self._current = job
            self._cancel = threading.Event()
            self._rows_at_last_job = self._store.row_count
            self._last_job_at = job.created_at
            self._task = asyncio.get_running_loop().create_task(self._run(job))
        log.info("training job started", extra={"job_id": job.job_id, "trigger": trigger.value})
        return job

    def _workers(self, requested: int | None) -> int:
        """The workers a job gets: InvalidArgument beyond the bound, FailedPrecondition when
        this trainer cannot run more than one."""
        options = self._options
        workers = options.workers if requested is None else requested
        if not 1 <= workers <= options.max_workers:
            raise InvalidArgument("workers", f"must be 1 to {options.max_workers} "
                                             f"(RECSYS_TRAINER_MAX_WORKERS), got {workers}")
        if workers > 1 and options.distributed is None:
            raise FailedPrecondition("distributed training reads the job's snapshot from "
                                     "object storage: set RECSYS_TRAINER_SNAPSHOT_URI")
        return workers

    async def cancel(self, job_id: str) -> Job:
        job = await self.get(job_id)
        if job.state.finished:
            raise FailedPrecondition(f"training job {job_id} already ended "
                                     f"({job.state.value})")
        self._cancel.set()
        return job

    async def _run(self, job: Job) -> None:
        clock = time.monotonic()
        await asyncio.to_thread(self._update, state=JobState.RUNNING, started_at=time.time())
        outcome: dict[str, Any] = {"state": JobState.SUCCEEDED}
        try:
            await asyncio.to_thread(
                run_training, job, store=self._store, registry=self._registry,
                options=self._options, update=self._update, cancelled=self._cancel.is_set,
            )
        except TrainingCancelled:
            outcome = {"state": JobState.CANCELLED, "error": "cancelled before it finished"}
        except RecsysError as exc:
            outcome = {"state": JobState.FAILED, "error": exc.message}
        except Exception as exc:
            log.exception("training job crashed", extra={"job_id": job.job_id})
            # The traceback is in the log; clients get no exception text (it may name files,
            # addresses or data).
            outcome = {"state": JobState.FAILED,
                       "error": f"internal error ({type(exc).__name__}); see the trainer's log"}
        final = self._current
        assert final is not None
        if outcome["state"] is not JobState.SUCCEEDED and final.mlflow_run_id:
            status: RunStatus = (
                "KILLED" if outcome["state"] is JobState.CANCELLED else "FAILED")
            await self._end_run_quietly(final.mlflow_run_id, status)
        outcome.update(eta_seconds=0.0, finished_at=time.time())
        # Metrics first: a watcher that sees the end may read them at once.
        self._record(replace(final, **outcome), time.monotonic() - clock)
        await asyncio.to_thread(self._update, **outcome)

    def _record(self, job: Job, seconds: float) -> None:
        self._metrics.jobs.labels(job.state.value).inc()
        self._metrics.job_duration_seconds.observe(seconds)
        if job.state is JobState.SUCCEEDED:
            for name, value in job.metrics.items():
                self._metrics.last_metric.labels(name).set(value)
        log.info("training job ended", extra={
            "job_id": job.job_id, "state": job.state.value, "seconds": round(seconds, 2),
            "model_version": job.model_version, "promoted": job.promoted, "error": job.error,
        })

    async def _end_run_quietly(self, run_id: str, status: RunStatus) -> None:
        try:
            await asyncio.to_thread(self._registry.end_run, run_id, status)
        except RecsysError as exc:
            log.warning("could not end the MLflow run", extra={"run_id": run_id,
                                                                "error": exc.message})

    # -- state changes (called from the worker thread too) ---------------------------------

    def _update(self, **changes: Any) -> Job:
        """Apply `changes` to the current job, save it, and wake its watchers."""
        with self._lock:
            assert self._current is not None
            job = replace(self._current, **changes)
            self._save(job)
            self._current = job
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._publish, job)
        return job

    def _save(self, job: Job) -> None:
        self._store.save_job(job.job_id, created_at=job.created_at, state=job.state.value,
                             body=job.to_json())

    def _publish(self, job: Job) -> None:
        for subscription in self._watchers.get(job.job_id, ()):
            subscription.latest = job
            subscription.changed.set()

    # -- automatic triggers ----------------------------------------------------------------

    async def run_triggers(self, *, new_events: int, interval_min: float) -> None:
        """Start a job after `new_events` new events, or every `interval_min` minutes when
        there are new events (0 turns either off); runs until cancelled."""
        while True:
            await asyncio.sleep(_TRIGGER_CHECK_S)
            trigger = self._due(new_events, interval_min)
            if trigger is None:
                continue
            with contextlib.suppress(AlreadyExists, FailedPrecondition):
                await self.start(JobRequest(), trigger=trigger)

    def _due(self, new_events: int, interval_min: float) -> Trigger | None:
        if self.running is not None:
            return None
        arrived = self._store.row_count - self._rows_at_last_job
        if arrived <= 0:
            return None
        if new_events and arrived >= new_events:
            return Trigger.NEW_EVENTS
        if interval_min and time.time() - self._last_job_at >= interval_min * 60:
            return Trigger.SCHEDULE
        return None
