"""Distributed training through real servers: jobs export their snapshot as Parquet to a real
SeaweedFS, and 2 workers (processes on this machine, gloo on loopback) fit what one
process fits; a worker killed with kill -9 fails its job cleanly, and the job runs again on
the same snapshot.

Tolerances: the workers solve each row exactly as one process does, but in other batches
(other padding, sometimes the other exact path), so factors agree to floating-point rounding
carried through the epochs: within FACTOR_TOLERANCE (factors are of order 0.1 to 1), and the
protocol's metrics within METRIC_TOLERANCE.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from recsys.trainer.v1 import trainer_pb2
from scripts.localstack.components import MlflowServer, SeaweedS3, TansuBroker
from services.core.errors import FailedPrecondition
from services.model.artifact import ModelArtifact
from services.trainer import parquet_snapshot
from services.trainer.evaluation import stratified_split
from services.trainer.object_store import ObjectStore
from tests.support.polling import eventually_async
from tests.support.trainer_server import (
    NO_SEARCH,
    Ingested,
    Trainer,
    TrainerData,
    trainer_on_topic,
)
from tests.support.worker_processes import worker_pids

pytestmark = pytest.mark.integration

SUCCEEDED, FAILED = trainer_pb2.JOB_STATE_SUCCEEDED, trainer_pb2.JOB_STATE_FAILED
FACTOR_TOLERANCE = 1e-3
METRIC_TOLERANCE = 1e-3
METRICS = ("ndcg_at_10", "precision_at_10", "recall_at_10", "map_at_10")


def object_store(seaweed: SeaweedS3, trainer: Trainer) -> ObjectStore:
    """The trainer's snapshot store, as any other process reaches it."""
    return ObjectStore(root=trainer.settings.snapshot_uri, endpoint=seaweed.endpoint,
                       region=seaweed.region, access_key=seaweed.access_key,
                       secret_key=seaweed.secret_key)


@pytest.fixture
async def trainer(kafka: TansuBroker, mlflow_server: MlflowServer, seaweed: SeaweedS3,
                  synthetic_topic: Ingested, trainer_data: TrainerData
                  ) -> AsyncIterator[Trainer]:
    """A trainer on the session's store that exports every job's snapshot to a bucket of its
    own on SeaweedFS (it creates the bucket) and may run 2 workers, with a registered model of
    its own."""
    async with trainer_on_topic(
            kafka, mlflow_server, synthetic_topic, trainer_data,
            snapshot_uri=f"s3://snapshots-{uuid.uuid4().hex[:8]}/trainer",
            s3_endpoint=seaweed.endpoint, s3_region=seaweed.region,
            s3_access_key=seaweed.access_key, s3_secret_key=seaweed.secret_key,
            max_workers=2) as started:
        yield started


async def start_job(trainer: Trainer, *, workers: int,
                    hyperparameters: trainer_pb2.Hyperparameters | None = None) -> str:
    started = await trainer.stub.StartTrainingJob(trainer_pb2.StartTrainingJobRequest(
        workers=workers, search=NO_SEARCH, hyperparameters=hyperparameters), timeout=10)
    assert started.job.workers == workers
    return started.job.job_id


async def watch(trainer: Trainer, job_id: str) -> list[trainer_pb2.TrainingJob]:
    stream = trainer.stub.WatchTrainingJob(
        trainer_pb2.WatchTrainingJobRequest(job_id=job_id), timeout=600)
    return [update.job async for update in stream]


async def run_job(trainer: Trainer, *, workers: int) -> list[trainer_pb2.TrainingJob]:
    return await watch(trainer, await start_job(trainer, workers=workers))


def mlflow(server: MlflowServer) -> MlflowClient:
    return MlflowClient(tracking_uri=server.tracking_uri, registry_uri=server.tracking_uri)


async def artifact(client: MlflowClient, job: trainer_pb2.TrainingJob,
                   tmp_path: Path) -> ModelArtifact:
    local = await asyncio.to_thread(client.download_artifacts, job.mlflow_run_id, "model",
                                    str(tmp_path / job.job_id))
    return ModelArtifact.load(Path(local) / "model.npz")


async def test_the_parquet_snapshot_round_trips_the_dataset_exactly(
        trainer: Trainer, seaweed: SeaweedS3, synthetic_topic: Ingested) -> None:
    assert trainer.app.store is not None
    snapshot = await asyncio.to_thread(trainer.app.store.snapshot, synthetic_topic.topic)
    weights = trainer.settings.type_weights
    data = snapshot.training_data(weights)
    store = object_store(seaweed, trainer)
    _, held_out = stratified_split(data.users, data.items, data.weights,
                                   n_users=len(data.user_ids), n_items=len(data.item_ids))
    exported = await asyncio.to_thread(parquet_snapshot.export, store, data,
                                       lineage=snapshot.lineage, type_weights=weights,
                                       test=held_out)

    back, manifest = await asyncio.to_thread(parquet_snapshot.read_training_data, store,
                                             exported.uri)
    for column in ("users", "items", "weights", "user_ids", "item_ids"):
        assert np.array_equal(getattr(back, column), getattr(data, column)), column
    assert back.weights.dtype == data.weights.dtype
    assert manifest.lineage == snapshot.lineage  # rows, offsets and content hash
    assert manifest.lineage.row_count == synthetic_topic.events
    assert manifest.rows == len(data)
    assert dict(manifest.type_weights) == dict(weights)

    # Exported again, the same events and weights are the same snapshot, not a new copy.
    again = await asyncio.to_thread(parquet_snapshot.export, store, data,
                                    lineage=snapshot.lineage, type_weights=weights,
                                    test=held_out)
    assert again == parquet_snapshot.Exported(exported.uri, manifest)

    # Two workers read disjoint halves that hold every row once.
    shards = [await asyncio.to_thread(parquet_snapshot.read_shards, store, manifest,
                                      rank=rank, world=2) for rank in (0, 1)]
    assert sum(s.full.users.n_users for s in shards) == manifest.n_users
    assert sum(s.full.items.n_users for s in shards) == manifest.n_items
    full_pairs = sum(len(s.full.users) for s in shards)
    assert full_pairs == sum(len(s.full.items) for s in shards) > 0
    assert full_pairs - sum(len(s.holdout.users) for s in shards) == len(held_out)

    # A file that changed after the export is refused.
    part = f"snapshots/{manifest.key}/by_user/part-00000.parquet"
    await asyncio.to_thread(store.write, part, b"not the exported rows")
    with pytest.raises(FailedPrecondition, match="SHA-256"):
        await asyncio.to_thread(parquet_snapshot.read_shards, store, manifest, rank=0,
                                world=2)


async def test_two_workers_train_what_one_process_trains_on_the_same_snapshot(
        trainer: Trainer, mlflow_server: MlflowServer, tmp_path: Path) -> None:
    one = (await run_job(trainer, workers=1))[-1]
    states = await run_job(trainer, workers=2)
    two = states[-1]
    assert one.state == SUCCEEDED, one.error
    assert two.state == SUCCEEDED, two.error
    assert two.snapshot_uri == one.snapshot_uri and one.snapshot_uri.startswith("s3://")
    assert two.hyperparameters == one.hyperparameters
    for name in METRICS:
        assert getattr(two.metrics, name) == pytest.approx(getattr(one.metrics, name),
                                                           abs=METRIC_TOLERANCE), name
    assert two.loss == pytest.approx(one.loss, rel=1e-4)
    epochs = [s.epoch for s in states]
    assert epochs == sorted(epochs) and two.epoch == two.epochs  # the workers' progress, live

    client = mlflow(mlflow_server)
    first, second = [await artifact(client, job, tmp_path) for job in (one, two)]
    assert list(second.user_ids) == list(first.user_ids)
    assert list(second.item_ids) == list(first.item_ids)
    np.testing.assert_allclose(second.user_factors, first.user_factors, atol=FACTOR_TOLERANCE)
    np.testing.assert_allclose(second.item_factors, first.item_factors, atol=FACTOR_TOLERANCE)

    run = await asyncio.to_thread(client.get_run, two.mlflow_run_id)
    assert run.data.params["workers"] == "2"
    assert run.data.metrics["distributed_exchange_seconds"] > 0
    losses = await asyncio.to_thread(client.get_metric_history, two.mlflow_run_id, "loss")
    assert sorted(m.step for m in losses) == list(range(1, two.epochs + 1))
    (dataset,) = [d.dataset for d in run.inputs.dataset_inputs]
    assert json.loads(dataset.source) == {"uri": two.snapshot_uri}
    assert json.loads(dataset.profile)["content_hash"] == two.lineage.content_hash


async def test_a_worker_killed_mid_training_fails_the_job_and_it_reruns_on_the_same_snapshot(
        trainer: Trainer, mlflow_server: MlflowServer, seaweed: SeaweedS3) -> None:
    champion = (await run_job(trainer, workers=1))[-1]
    assert champion.state == SUCCEEDED and champion.promoted, champion.promotion_reason
    # Many epochs: the kill lands while the workers fit, whatever the machine's load.
    long_fit = trainer_pb2.Hyperparameters(epochs=60)
    job_id = await start_job(trainer, workers=2, hyperparameters=long_fit)

    async def fitting() -> dict[int, int]:
        job = (await trainer.stub.GetTrainingJob(
            trainer_pb2.GetTrainingJobRequest(job_id=job_id), timeout=10)).job
        pids = worker_pids(job_id)
        return pids if job.epoch >= 1 and len(pids) == 2 else {}

    pids = await eventually_async(fitting, timeout=300, what="both workers fitting")
    os.kill(pids[1], signal.SIGKILL)
    failed = (await watch(trainer, job_id))[-1]

    assert failed.state == FAILED
    assert failed.error.startswith("distributed fit failed: worker"), failed.error
    assert f"The snapshot {failed.snapshot_uri} is kept" in failed.error
    assert worker_pids(job_id) == {}  # the other worker was stopped
    assert not failed.model_version and not failed.promoted
    client = mlflow(mlflow_server)
    alias = await asyncio.to_thread(client.get_model_version_by_alias,
                                    trainer.settings.model_name, "champion")
    assert alias.version == champion.model_version
    run = await asyncio.to_thread(client.get_run, failed.mlflow_run_id)
    assert run.info.status == "FAILED"
    kept = await asyncio.to_thread(parquet_snapshot.load_manifest,
                                   object_store(seaweed, trainer), failed.snapshot_uri)
    assert kept.lineage.content_hash == failed.lineage.content_hash

    rerun = (await watch(trainer, await start_job(trainer, workers=2,
                                                  hyperparameters=long_fit)))[-1]
    assert rerun.state == SUCCEEDED, rerun.error
    assert rerun.snapshot_uri == failed.snapshot_uri
    assert rerun.model_version and rerun.lineage == failed.lineage
