"""TrainerService over gRPC: validate, convert to domain values, call the core, convert back."""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections.abc import AsyncIterator, Callable

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from recsys.trainer.v1 import trainer_pb2, trainer_pb2_grpc
from services.core.callers import current_caller
from services.core.errors import InvalidArgument
from services.model.messages import lineage_to_proto, metrics_to_proto, version_to_proto
from services.trainer.jobs import Job, JobManager, JobRequest
from services.trainer.registry import MlflowRegistry

SERVICE_NAME = trainer_pb2.DESCRIPTOR.services_by_name["TrainerService"].full_name
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100


class TrainerServicer(trainer_pb2_grpc.TrainerServiceServicer):
    """`jobs` is a callable because the job manager exists only once the store is open."""

    def __init__(self, jobs: Callable[[], JobManager], registry: MlflowRegistry) -> None:
        self._jobs = jobs
        self._registry = registry

    async def StartTrainingJob(
        self, request: trainer_pb2.StartTrainingJobRequest, context: grpc.aio.ServicerContext
    ) -> trainer_pb2.StartTrainingJobResponse:
        # Presence, not value: an explicit 0 is pinned (and invalid for most fields).
        budget = request.search
        job = await self._jobs().start(JobRequest(
            pinned={f.name: value for f, value in request.hyperparameters.ListFields()},
            trials=budget.trials if budget.HasField("trials") else None,
            search_seconds=budget.seconds if budget.HasField("seconds") else None,
            wait_for_events=not request.skip_wait_for_events,
            workers=request.workers if request.HasField("workers") else None))
        return trainer_pb2.StartTrainingJobResponse(job=job_to_proto(job))

    async def GetTrainingJob(
        self, request: trainer_pb2.GetTrainingJobRequest, context: grpc.aio.ServicerContext
    ) -> trainer_pb2.GetTrainingJobResponse:
        job = await self._jobs().get(_job_id(request.job_id))
        return trainer_pb2.GetTrainingJobResponse(job=job_to_proto(job))

    async def ListTrainingJobs(
        self, request: trainer_pb2.ListTrainingJobsRequest, context: grpc.aio.ServicerContext
    ) -> trainer_pb2.ListTrainingJobsResponse:
        jobs = await self._jobs().recent(_page_size(request.page_size))
        return trainer_pb2.ListTrainingJobsResponse(jobs=[job_to_proto(j) for j in jobs])

    async def WatchTrainingJob(
        self, request: trainer_pb2.WatchTrainingJobRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[trainer_pb2.WatchTrainingJobResponse]:
        async for job in self._jobs().watch(_job_id(request.job_id)):
            yield trainer_pb2.WatchTrainingJobResponse(job=job_to_proto(job))

    async def CancelTrainingJob(
        self, request: trainer_pb2.CancelTrainingJobRequest, context: grpc.aio.ServicerContext
    ) -> trainer_pb2.CancelTrainingJobResponse:
        job = await self._jobs().cancel(_job_id(request.job_id))
        return trainer_pb2.CancelTrainingJobResponse(job=job_to_proto(job))

    async def ListModelVersions(
        self, request: trainer_pb2.ListModelVersionsRequest, context: grpc.aio.ServicerContext
    ) -> trainer_pb2.ListModelVersionsResponse:
        limit = _page_size(request.page_size)
        versions = await asyncio.to_thread(self._registry.list_versions, limit)
        return trainer_pb2.ListModelVersionsResponse(
            versions=[version_to_proto(v) for v in versions])

    async def PromoteModelVersion(
        self, request: trainer_pb2.PromoteModelVersionRequest, context: grpc.aio.ServicerContext
    ) -> trainer_pb2.PromoteModelVersionResponse:
        version, previous = await asyncio.to_thread(
            self._registry.promote, request.version, by=str(current_caller()))
        return trainer_pb2.PromoteModelVersionResponse(
            model_version=version_to_proto(version), previous_version=previous or "")


def _job_id(job_id: str) -> str:
    if not job_id:
        raise InvalidArgument("job_id", "is required")
    return job_id


def _page_size(page_size: int) -> int:
    if not 0 <= page_size <= MAX_PAGE_SIZE:
        raise InvalidArgument("page_size", f"must be 0 to {MAX_PAGE_SIZE}, got {page_size}")
    return page_size or DEFAULT_PAGE_SIZE


def _timestamp(seconds: float | None) -> Timestamp | None:
    if seconds is None:
        return None
    whole = math.floor(seconds)  # split first: seconds * 1e9 would lose the nanoseconds
    stamp = Timestamp()
    stamp.FromNanoseconds(whole * 1_000_000_000 + round((seconds - whole) * 1e9))
    return stamp


def job_to_proto(job: Job) -> trainer_pb2.TrainingJob:
    config = job.config
    return trainer_pb2.TrainingJob(
        job_id=job.job_id,
        state=trainer_pb2.JobState.Value(f"JOB_STATE_{job.state.name}"),
        phase=(trainer_pb2.JobPhase.Value(f"JOB_PHASE_{job.phase.name}") if job.phase
               else trainer_pb2.JOB_PHASE_UNSPECIFIED),
        trigger=trainer_pb2.JobTrigger.Value(f"JOB_TRIGGER_{job.trigger.name}"),
        hyperparameters=trainer_pb2.Hyperparameters(
            factors=config.factors, epochs=config.epochs, regularization=config.regularization,
            reg_exponent=config.reg_exponent, alpha=config.alpha, seed=config.seed,
        ),
        epoch=job.epoch,
        epochs=job.epochs,
        loss=job.loss,
        eta_seconds=job.eta_seconds,
        metrics=metrics_to_proto(job.metrics),
        lineage=lineage_to_proto(job.lineage),
        mlflow_run_id=job.mlflow_run_id,
        model_version=job.model_version,
        promoted=job.promoted,
        promotion_reason=job.promotion_reason,
        error=job.error,
        created_at=_timestamp(job.created_at),
        started_at=_timestamp(job.started_at),
        finished_at=_timestamp(job.finished_at),
        search=(trainer_pb2.SearchProgress(**dataclasses.asdict(job.search))
                if job.search is not None else None),
        events_behind=job.events_behind,
        workers=job.workers,
        snapshot_uri=job.snapshot_uri,
    )
