"""iALS over torch.distributed: each process of a group solves its shard of the rows.

Every process holds the whole factor matrices, so a half-epoch's solves need nothing from the
others; after each half-epoch an all-gather hands every process the rows the others solved.
The solves are model.py's own (`fit_shard`), so the result is the one-process fit's up to
floating-point rounding. Per epoch each process receives (n_users + n_items) x factors
floats, whatever the number of interactions: the data scales out, the factor matrices do not
(README, "Distributed training").
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist

from services.trainer.model import (
    FactorModel,
    Side,
    TrainConfig,
    fit_shard,
    objective,
    shard_loss_terms,
)
from services.trainer.parquet_snapshot import Manifest, WorkerShards, worker_buckets

# on_epoch(epoch, loss): after each epoch of the served model's fit (every process).
EpochLoss = Callable[[int, float], None]


def group_bounds(bounds: Sequence[int], world: int) -> list[int]:
    """Where each worker's rows start (and the last one's end), from a side's bucket bounds."""
    return [bounds[worker_buckets(rank, world).start] for rank in range(world)] + [bounds[-1]]


class GatherExchange:
    """`model.Exchange` for the default process group; `seconds` adds up the time spent in
    the collectives (waiting for the slowest process included)."""

    def __init__(self, manifest: Manifest, world: int) -> None:
        self._bounds: dict[Side, list[int]] = {
            "users": group_bounds(manifest.user_bounds, world),
            "items": group_bounds(manifest.item_bounds, world)}
        self.seconds = 0.0

    def __call__(self, factors: torch.Tensor, side: Side) -> None:
        started = time.perf_counter()
        bounds, rank = self._bounds[side], dist.get_rank()
        counts = [end - start for start, end in itertools.pairwise(bounds)]
        mine = factors.new_zeros(max(counts), factors.shape[1])  # all_gather: equal sizes
        mine[: counts[rank]] = factors[bounds[rank] : bounds[rank + 1]]
        blocks = [torch.empty_like(mine) for _ in counts]
        dist.all_gather(blocks, mine)
        for other, block in enumerate(blocks):
            if other != rank:
                factors[bounds[other] : bounds[other + 1]] = block[: counts[other]]
        self.seconds += time.perf_counter() - started


@dataclass(frozen=True)
class GroupFit:
    """What a worker fitted: the served model, the evaluation's, and the seconds its
    collectives took in each fit."""

    full: FactorModel
    holdout: FactorModel
    exchange_seconds: float
    epochs: int


def fit_group(shards: WorkerShards, manifest: Manifest, config: TrainConfig, *,
              on_epoch: EpochLoss, on_holdout_epoch: Callable[[int], None]) -> GroupFit:
    """Fit the served model, then the evaluation's, on this process's shards; every process
    of the default group calls it. `on_epoch` gets the whole objective after each epoch of
    the first fit (every process's share, all-reduced)."""
    world = dist.get_world_size()
    exchange = GatherExchange(manifest, world)

    def loss(epoch: int, epochs: int, model: FactorModel) -> None:
        terms, weight = shard_loss_terms(shards.full, model.user_factors, model.item_factors,
                                         config)
        sums = torch.tensor([terms, weight], dtype=torch.float64)
        dist.all_reduce(sums)
        on_epoch(epoch, objective(float(sums[0]), float(sums[1]), model.user_factors,
                                  model.item_factors, config))

    full = fit_shard(shards.full, config, exchange=exchange, on_epoch=loss)
    holdout = fit_shard(shards.holdout, config, exchange=exchange,
                        on_epoch=lambda epoch, epochs, model: on_holdout_epoch(epoch))
    return GroupFit(full, holdout, exchange.seconds, 2 * config.epochs)
