"""`python -m services.trainer.worker RUN`: one worker of a distributed fit, started as a
process on the trainer's machine (services/trainer/local_workers.py) or by torchrun in each
pod of an indexed Job.

RUN is the run's folder in the object store (``runs/<job_id>``, services/trainer/
distributed.py); its ``spec.json`` names the snapshot and the hyper-parameters. RANK and
WORLD_SIZE give the worker's place; the rendezvous is RECSYS_WORKER_RENDEZVOUS (a file, on
one machine) or, unset, torchrun's MASTER_ADDR and MASTER_PORT; the object
store comes from RECSYS_TRAINER_SNAPSHOT_URI and RECSYS_TRAINER_S3_*. Each worker reads only
its own shard of the snapshot. Worker 0 rewrites ``progress.json`` after every epoch and
writes ``factors.npz`` at the end; a worker that fails exits non-zero, which ends the group.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import time
from datetime import timedelta
from typing import Any

import torch.distributed as dist

from services.core import logging as recsys_logging
from services.core.settings import load
from services.trainer.distributed import (
    FACTORS,
    PROGRESS,
    SPEC,
    RunProgress,
    RunSpec,
    factors_to_bytes,
)
from services.trainer.local_workers import RENDEZVOUS_ENV
from services.trainer.object_store import ObjectStore
from services.trainer.parquet_snapshot import load_manifest, read_shards
from services.trainer.settings import SnapshotStoreSettings
from services.trainer.sharded import fit_group

log = logging.getLogger("services.trainer.worker")

# Longest wait for the other workers in the rendezvous and in any collective.
COLLECTIVE_TIMEOUT = timedelta(minutes=10)


def run_worker(store: ObjectStore, run: str) -> None:
    """Join the group, fit this worker's shard, and (worker 0) report and write the result."""
    spec = RunSpec.from_json(store.read(f"{run}/{SPEC}"))
    dist.init_process_group("gloo", init_method=os.environ.get(RENDEZVOUS_ENV, "env://"),
                            rank=int(os.environ["RANK"]),
                            world_size=int(os.environ["WORLD_SIZE"]), timeout=COLLECTIVE_TIMEOUT)
    try:
        rank, world = dist.get_rank(), dist.get_world_size()
        if world != spec.workers:
            raise RuntimeError(f"{world} workers joined; the run asked for {spec.workers}")
        started = time.perf_counter()
        manifest = load_manifest(store, spec.snapshot)
        shards = read_shards(store, manifest, rank=rank, world=world)
        log.info("worker ready", extra={"rank": rank, "world": world,
                                        "users": shards.full.users.n_users,
                                        "items": shards.full.items.n_users,
                                        "rows": len(shards.full.users)})
        progress = RunProgress()

        def report(**changes: Any) -> None:
            nonlocal progress
            progress = dataclasses.replace(progress, **changes)
            if rank == 0:
                store.write(f"{run}/{PROGRESS}", progress.to_json())

        result = fit_group(
            shards, manifest, spec.config,
            on_epoch=lambda epoch, loss: report(losses=(*progress.losses, loss)),
            on_holdout_epoch=lambda epoch: report(holdout_epochs=epoch))
        if rank == 0:
            store.write(f"{run}/{FACTORS}", factors_to_bytes(result.full, result.holdout))
            report(done=True, fit_seconds=time.perf_counter() - started,
                   exchange_seconds=result.exchange_seconds)
        log.info("worker done", extra={"rank": rank,
                                       "seconds": round(time.perf_counter() - started, 2),
                                       "exchange_seconds": round(result.exchange_seconds, 2)})
    finally:
        dist.destroy_process_group()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="the run's folder in the object store, runs/<job_id>")
    args = parser.parse_args(argv)
    settings = load(SnapshotStoreSettings)
    recsys_logging.configure("INFO", "auto")
    store = settings.object_store()
    if store is None:
        raise SystemExit("error: RECSYS_TRAINER_SNAPSHOT_URI is not set")
    run_worker(store, args.run)


if __name__ == "__main__":
    main()
