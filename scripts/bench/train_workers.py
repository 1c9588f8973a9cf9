"""`scripts/bench/train.py --workers 1,2`: a job's distributed fits on synthetic interactions,
timed for each number of workers, with the time their collectives take per epoch.

The path is a training job's: the data is exported as the job's Parquet snapshot to a
SeaweedFS bucket this script starts (on loopback), then `DistributedFits` starts the workers
as local processes that read their shards and fit the served model and the evaluation's
(2 x EPOCHS epochs). Torch threads are split between the workers (cores // workers each), so
every run uses the machine's cores once. Per epoch each worker all-gathers the factors the
others solved: (n_users + n_items) x factors floats, whatever the number of interactions;
"exchange" is the time spent in those collectives, waiting for the slowest worker included.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recsys.events.v1 import interaction_pb2
from scripts.localstack.components import SeaweedS3
from services.data.synthetic import SyntheticData, SyntheticSpec
from services.model.lineage import Lineage
from services.trainer import parquet_snapshot
from services.trainer.dataset import TrainingData, index_ids
from services.trainer.distributed import DistributedFits
from services.trainer.evaluation import stratified_split
from services.trainer.local_workers import LocalLauncher
from services.trainer.model import TrainConfig
from services.trainer.object_store import ObjectStore
from services.trainer.settings import DEFAULT_TYPE_WEIGHTS


@dataclass(frozen=True)
class WorkersRun:
    workers: int
    seconds: float  # wall time of DistributedFits.fit: start, read, both fits, result
    fit_seconds: float  # worker 0, from its start to its result
    exchange_seconds: float  # worker 0's collectives, both fits
    epochs: int  # of both fits
    user_factors: np.ndarray

    @property
    def exchange_per_epoch(self) -> float:
        return self.exchange_seconds / self.epochs


def synthetic(events: int) -> tuple[TrainingData, Lineage]:
    """`events` synthetic interactions (20 per user on average, a catalogue a fifth of the
    users), weighed by the trainer's default type weights."""
    users = max(events // 20, 10)
    data = SyntheticData(SyntheticSpec(users=users, items=max(users // 5, 10), events=events))
    weight_of = np.zeros(max(interaction_pb2.InteractionType.values()) + 1)
    for name, weight in DEFAULT_TYPE_WEIGHTS.items():
        weight_of[interaction_pb2.InteractionType.Value(f"INTERACTION_TYPE_{name.upper()}")] = (
            weight)
    blocks = list(data.blocks())
    user = np.concatenate([b.user for b in blocks]).astype(str).astype(object)
    item = np.concatenate([b.item for b in blocks]).astype(str).astype(object)
    weights = weight_of[np.concatenate([b.type for b in blocks])]
    kept = weights > 0
    user_ids, users_index = index_ids(user[kept])
    item_ids, items_index = index_ids(item[kept])
    training = TrainingData(users=users_index, items=items_index, weights=weights[kept],
                            user_ids=user_ids, item_ids=item_ids)
    digest = hashlib.sha256()
    for column in (users_index, items_index, weights[kept]):
        digest.update(np.ascontiguousarray(column).tobytes())
    lineage = Lineage(topic="bench", row_count=events, content_hash=digest.hexdigest(),
                      partition_offsets={0: events}, user_count=len(user_ids),
                      item_count=len(item_ids))
    return training, lineage


def run(workers: list[int], *, events: int, epochs: int) -> dict[str, float | str]:
    cores = os.cpu_count() or 1
    started = time.perf_counter()
    data, lineage = synthetic(events)
    print(f"data: {len(data)} weighted interactions of {len(data.user_ids)} users and "
          f"{len(data.item_ids)} items ({time.perf_counter() - started:.1f} s to generate); "
          f"{epochs} epochs per fit, 2 fits (served + evaluation)", flush=True)
    fields: dict[str, float | str] = {"events": float(len(data))}
    with tempfile.TemporaryDirectory(prefix="bench-workers-") as work:
        seaweed = SeaweedS3(Path(work) / "seaweed")
        with seaweed:
            store = ObjectStore(root="s3://bench-snapshots/trainer", endpoint=seaweed.endpoint,
                                region=seaweed.region, access_key=seaweed.access_key,
                                secret_key=seaweed.secret_key)
            started = time.perf_counter()
            _, test = stratified_split(data.users, data.items, data.weights,
                                       n_users=len(data.user_ids), n_items=len(data.item_ids))
            exported = parquet_snapshot.export(store, data, lineage=lineage,
                                               type_weights=DEFAULT_TYPE_WEIGHTS, test=test)
            print(f"snapshot: exported in {time.perf_counter() - started:.1f} s to "
                  f"{exported.uri}", flush=True)
            environ = {"RECSYS_TRAINER_SNAPSHOT_URI": store.root,
                       "RECSYS_TRAINER_S3_ENDPOINT": store.endpoint,
                       "RECSYS_TRAINER_S3_REGION": store.region,
                       "RECSYS_TRAINER_S3_ACCESS_KEY": store.access_key,
                       "RECSYS_TRAINER_S3_SECRET_KEY": store.secret_key}
            fits = DistributedFits(store, LocalLauncher(environ=environ,
                                                        work_dir=Path(work) / "workers"))
            runs = [_fit(fits, exported.uri, workers=n, epochs=epochs, cores=cores)
                    for n in workers]
    factors = TrainConfig().factors
    floats = (len(data.user_ids) + len(data.item_ids)) * factors
    print(f"\n{'workers':>7} {'threads':>7} {'wall s':>8} {'fit s':>8} {'epoch s':>8} "
          f"{'exchange ms/epoch':>17} {'exchange %':>10} {'max |Δ user factor|':>20}")
    for result in runs:
        difference = float(np.abs(result.user_factors - runs[0].user_factors).max())
        print(f"{result.workers:>7} {max(1, cores // result.workers):>7} "
              f"{result.seconds:8.1f} {result.fit_seconds:8.1f} "
              f"{result.fit_seconds / result.epochs:8.2f} "
              f"{1000 * result.exchange_per_epoch:17.1f} "
              f"{100 * result.exchange_seconds / result.fit_seconds:10.1f} {difference:20.2e}")
        fields |= {f"seconds_{result.workers}w": result.seconds,
                   f"exchange_ms_per_epoch_{result.workers}w": 1000 * result.exchange_per_epoch}
    print(f"per epoch and worker, the all-gathers move {floats} floats "
          f"({4 * floats / 1e6:.1f} MB; a worker receives (N-1)/N of it)")
    if len(runs) > 1:
        fields["speedup"] = runs[0].seconds / runs[-1].seconds
    fields["exchange_mb_per_epoch"] = 4 * floats / 1e6
    return fields


def _fit(fits: DistributedFits, snapshot: str, *, workers: int, epochs: int,
         cores: int) -> WorkersRun:
    config = TrainConfig(epochs=epochs, num_threads=max(1, cores // workers))
    started = time.perf_counter()
    result = fits.fit(snapshot, config, job_id=f"bench-{workers}w", workers=workers,
                      on_epoch=lambda epoch, loss: None, on_holdout_epoch=lambda epoch: None,
                      cancelled=lambda: False)
    seconds = time.perf_counter() - started
    print(f"{workers} worker(s): {seconds:.1f} s", flush=True)
    return WorkersRun(workers, seconds, result.progress.fit_seconds,
                      result.progress.exchange_seconds, 2 * epochs,
                      result.full.user_factors.numpy())


