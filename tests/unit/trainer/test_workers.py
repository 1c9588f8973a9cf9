"""The launchers of distributed fits without a cluster: local worker processes (real
processes standing in for workers) and the indexed Job, against a fake API server; the bounds
on a job's workers; how a snapshot's buckets split between workers."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from services.core.errors import FailedPrecondition, InvalidArgument, Unavailable
from services.core.settings import SettingsError, load
from services.trainer.dataset import DatasetStore
from services.trainer.distributed import DistributedFits, RunProgress, _Reported
from services.trainer.jobs import JobManager, JobRequest
from services.trainer.kubernetes_workers import (
    POD_TEMPLATE,
    KubernetesApi,
    KubernetesLauncher,
    job_name,
)
from services.trainer.local_workers import LocalGroup
from services.trainer.metrics import TrainerMetrics
from services.trainer.model import TrainConfig
from services.trainer.parquet_snapshot import BUCKETS, worker_buckets
from services.trainer.search import Defaults
from services.trainer.settings import DEFAULT_TYPE_WEIGHTS, TrainerSettings
from services.trainer.training import TrainingOptions
from tests.support.polling import eventually
from tests.support.trainer_fakes import FakeRegistry

JOB_ID = "20261203-101500-3fa2c1"
TEMPLATE: dict[str, Any] = {"template": {
    "metadata": {"labels": {"app.kubernetes.io/name": "trainer-worker"}},
    "spec": {"containers": [{"name": "worker", "image": "trainer"}]}}}


def process(code: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", code], process_group=0)


def test_a_local_worker_that_dies_names_itself_and_stop_ends_the_others(tmp_path: Path) -> None:
    waiting = process("import signal; signal.pause()")
    dying = subprocess.Popen([sys.executable, "-c", "import os; os.kill(os.getpid(), 9)"],
                             process_group=waiting.pid)
    group = LocalGroup([waiting, dying], tmp_path / "workers.log")
    why = eventually(group.poll, timeout=30, what="the dead worker noticed")
    assert why is not None and why.startswith("worker 1 of 2 failed (exit code -9, SIGKILL)")
    group.stop()
    group.stop()  # idempotent
    assert waiting.returncode == -15  # SIGTERM, to the group


def test_local_workers_that_all_succeed_poll_empty(tmp_path: Path) -> None:
    group = LocalGroup([process("pass"), process("pass")], tmp_path / "workers.log")
    assert eventually(lambda: group.poll() is not None, timeout=30, what="both exited")
    assert group.poll() == ""


@dataclass(frozen=True)
class FakeApi(KubernetesApi):
    """The API server's answers, by method and path ({} for the rest); every call recorded."""

    answers: Mapping[tuple[str, str], dict[str, Any] | None] = field(default_factory=dict)
    calls: list[tuple[str, str, Mapping[str, Any] | None]] = field(default_factory=list)

    def call(self, method: str, path: str, body: Mapping[str, Any] | None = None,
             ) -> dict[str, Any] | None:
        self.calls.append((method, path, body))
        return self.answers.get((method, path), {})


def fake_api(answers: Mapping[tuple[str, str], dict[str, Any] | None]) -> FakeApi:
    return FakeApi(namespace="recsys", answers=answers)


JOBS = "/apis/batch/v1/namespaces/recsys/jobs"
PODTEMPLATE = f"/api/v1/namespaces/recsys/podtemplates/{POD_TEMPLATE}"
NAME = job_name(JOB_ID)


def test_the_kubernetes_launcher_creates_an_indexed_job_from_the_pod_template() -> None:
    api = fake_api({("GET", PODTEMPLATE): TEMPLATE})
    group = KubernetesLauncher(api, environ={"RECSYS_TRAINER_SNAPSHOT_URI": "s3://b/p"}).start(
        job_id=JOB_ID, workers=3, run=f"runs/{JOB_ID}")
    method, path, job = api.calls[-1]
    assert (method, path) == ("POST", JOBS)
    assert job is not None and job["metadata"]["name"] == NAME
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == 3
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][-2:] == ["services.trainer.worker", f"runs/{JOB_ID}"]
    assert {"name": "RECSYS_TRAINER_SNAPSHOT_URI", "value": "s3://b/p"} in container["env"]
    assert TEMPLATE["template"]["spec"]["containers"][0].keys() == {"name", "image"}  # a copy

    group.stop()  # still running (the fake answers {}): deleted with its pods
    assert api.calls[-1][:2] == ("DELETE", f"{JOBS}/{NAME}")


@pytest.mark.parametrize(("status", "outcome"), [
    ({}, None),
    ({"conditions": [{"type": "Complete", "status": "False"}]}, None),
    ({"conditions": [{"type": "Complete", "status": "True"}]}, ""),
    ({"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                      "message": "Job has reached the specified backoff limit"}]},
     f"worker pods of the Job {NAME} failed (BackoffLimitExceeded: Job has reached the "
     "specified backoff limit)"),
])
def test_a_jobs_status_is_the_groups_outcome(status: dict[str, Any],
                                             outcome: str | None) -> None:
    api = fake_api({("GET", PODTEMPLATE): TEMPLATE,
                   ("GET", f"{JOBS}/{NAME}"): {"metadata": {"name": NAME}, "status": status}})
    group = KubernetesLauncher(api, environ={}).start(job_id=JOB_ID, workers=2, run="runs/x")
    assert group.poll() == outcome
    group.stop()  # a finished Job stays for its logs; a running one is deleted
    deleted = api.calls[-1][0] == "DELETE"
    assert deleted == (outcome is None)


def test_a_deleted_job_and_a_missing_pod_template_fail_the_fit() -> None:
    api = fake_api({("GET", PODTEMPLATE): TEMPLATE,
                   ("GET", f"{JOBS}/{NAME}"): None})
    group = KubernetesLauncher(api, environ={}).start(job_id=JOB_ID, workers=2, run="runs/x")
    assert group.poll() == f"the Job {NAME} was deleted"
    missing = fake_api({("GET", PODTEMPLATE): None})
    with pytest.raises(Unavailable, match="no PodTemplate trainer-worker"):
        KubernetesLauncher(missing, environ={}).start(job_id=JOB_ID, workers=2, run="runs/x")


def test_a_snapshots_buckets_split_between_workers_once_each() -> None:
    for world in (1, 2, 3, 7, BUCKETS):
        buckets = [b for rank in range(world) for b in worker_buckets(rank, world)]
        assert buckets == list(range(BUCKETS)), world
    for rank, world in ((0, 0), (2, 2), (0, BUCKETS + 1)):
        with pytest.raises(ValueError):
            worker_buckets(rank, world)


STORE = {"RECSYS_TRAINER_SNAPSHOT_URI": "s3://snapshots/trainer",
         "RECSYS_TRAINER_S3_ENDPOINT": "http://127.0.0.1:8333",
         "RECSYS_TRAINER_S3_ACCESS_KEY": "access",
         "RECSYS_TRAINER_S3_SECRET_KEY": "secret"}  # pragma: allowlist secret - a test value


@pytest.mark.parametrize(("environ", "reason"), [
    ({"RECSYS_TRAINER_WORKERS": "2"}, "set RECSYS_TRAINER_SNAPSHOT_URI"),
    ({**STORE, "RECSYS_TRAINER_WORKERS": "3", "RECSYS_TRAINER_MAX_WORKERS": "2"},
     "at most RECSYS_TRAINER_MAX_WORKERS"),
    ({"RECSYS_TRAINER_SNAPSHOT_URI": "s3://snapshots"}, "needs RECSYS_TRAINER_S3_ENDPOINT"),
    ({**STORE, "RECSYS_TRAINER_SNAPSHOT_URI": "snapshots"}, "s3://bucket"),
    ({**STORE, "RECSYS_TRAINER_MAX_WORKERS": str(BUCKETS + 1)}, "RECSYS_TRAINER_MAX_WORKERS"),
])
def test_bad_worker_settings_stop_the_trainer(environ: dict[str, str], reason: str) -> None:
    with pytest.raises(SettingsError, match=reason):
        load(TrainerSettings, environ, prefix="RECSYS_TRAINER_").validate()


def test_workers_get_the_keys_unless_they_take_them_from_a_secret() -> None:
    settings = load(TrainerSettings, STORE, prefix="RECSYS_TRAINER_")
    assert settings.object_store_env() == {**STORE, "RECSYS_TRAINER_S3_REGION": "us-east-1"}
    assert "RECSYS_TRAINER_S3_SECRET_KEY" not in settings.object_store_env(keys=False)


def manager(store: DatasetStore, registry: FakeRegistry, metrics: TrainerMetrics,
            distributed: DistributedFits | None) -> JobManager:
    """Jobs that may ask for up to 4 workers."""
    return JobManager(store, registry, metrics, defaults=TrainConfig(), options=TrainingOptions(
        topic="interactions", type_weights=DEFAULT_TYPE_WEIGHTS, min_ndcg=0.05,
        gate_tolerance=0.01, wait_for_events_s=5.0, evaluation_max_rows=2_000_000,
        evaluation_max_users=20_000, top_lists_max_cells=10**10,
        search=Defaults(trials=0, trial_multiple=1.0, max_seconds=1.0, max_rows=1_000),
        end_offsets=dict, distributed=distributed, max_workers=4))


async def test_a_jobs_workers_are_bounded_and_need_a_snapshot_store(
        store: DatasetStore, fake_registry: FakeRegistry, metrics: TrainerMetrics) -> None:
    alone = manager(store, fake_registry, metrics, distributed=None)
    await alone.open()
    with pytest.raises(InvalidArgument, match="workers"):
        await alone.start(JobRequest(workers=5))
    with pytest.raises(FailedPrecondition, match="RECSYS_TRAINER_SNAPSHOT_URI"):
        await alone.start(JobRequest(workers=2))
    never_started = DistributedFits(store=None, launcher=None)  # type: ignore[arg-type]
    grouped = manager(store, fake_registry, metrics, distributed=never_started)
    await grouped.open()
    with pytest.raises(InvalidArgument, match="must be 1 to 4"):
        await grouped.start(JobRequest(workers=0))


@dataclass
class TornStore:
    """A store whose progress object is read first as a prefix of itself (a read that raced
    worker 0's rewrite), then whole."""

    body: bytes
    reads: int = 0

    def read_if_exists(self, path: str) -> bytes | None:
        self.reads += 1
        return self.body[:len(self.body) // 2] if self.reads == 1 else self.body


def test_a_torn_progress_read_is_skipped_and_the_next_poll_reports_it() -> None:
    store = TornStore(RunProgress(losses=(3.0, 2.0)).to_json())
    fits = DistributedFits(store=store, launcher=None)  # type: ignore[arg-type]
    epochs: list[int] = []
    reported = _Reported()
    assert fits._report("run", reported, lambda e, _: epochs.append(e), lambda _: None) is None
    assert epochs == []
    progress = fits._report("run", reported, lambda e, _: epochs.append(e), lambda _: None)
    assert progress is not None and progress.losses == (3.0, 2.0)
    assert epochs == [1, 2]
