"""Implicit-feedback matrix factorisation trained with iALS (weighted squares over all items).

The objective is Hu, Koren & Volinsky's: every (user, item) pair is a target, 1 where the user
interacted and 0 elsewhere, weighted by a confidence of ``1 + alpha * weight`` on interactions
and 1 on everything else. Regularisation is frequency scaled (Rendle et al. 2021, "Revisiting
the Performance of iALS on Item Recommendation Benchmarks"): a row's penalty grows with the
total confidence of its loss terms, so heavy users and popular items are not under-regularised.

Each half-epoch solves every row exactly with a batched Cholesky factorisation, using the Gram
trick ``YᵀY + Yᵤᵀ(Cᵤ - I)Yᵤ`` so that the cost is linear in the number of interactions.
Items are solved before users, so the final user factors are the exact solution for the final
item factors: folding a known user's items back in (``ModelArtifact.fold_in`` in
services.model.artifact) reproduces them.

Every row's solve depends only on its own interactions and the other side's factors, so the
rows can be split between processes (``Shard``, ``fit_shard``): each solves its share of a
half-epoch and an exchange makes the factors whole again (services/trainer/sharded.py does
that with torch.distributed).
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from services.trainer.hyperparameters import BOUNDS, check

# on_epoch(epoch, epochs, model): the factors after that epoch (1-based), live while fitting.
ProgressCallback = Callable[[int, int, "FactorModel"], None]
CancelCheck = Callable[[], bool]
Side = Literal["users", "items"]
# exchange(factors, side): this process has just solved its shard's rows of `factors` (its
# users or its items) in place; afterwards every process's `factors` must hold every row.
Exchange = Callable[[torch.Tensor, Side], None]

_FIT_LOCK = threading.Lock()
# Elements (rows x padded length x factors) gathered at once; bounds memory per solve batch.
_GATHER_BUDGET = 1 << 22
_MAX_BATCH_ROWS = 1024


class TrainingCancelled(Exception):
    """The cancel check asked training to stop; no model is produced."""


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters. The defaults are the fallback when a job does not search: chosen for
    the best worst case over the data shapes the project measures (README, "Hyper-parameter
    search"), not for any one dataset's optimum.

    A row's penalty is ``regularization * (n_other + alpha * Σ weight) ** reg_exponent``, where
    ``n_other`` is the number of columns (items for a user, users for an item): the total
    confidence of its loss terms. A low exponent keeps the penalty from growing with the
    catalogue, which is where a fixed value fails on large, sparse data.
    ``num_threads`` is the number of batches solved at once (None: torch's thread count).
    """

    factors: int = 64
    epochs: int = 8
    regularization: float = 9.5
    reg_exponent: float = 0.25
    alpha: float = 10.0
    init_std: float = 0.1
    seed: int = 42
    num_threads: int | None = None

    def validate(self) -> None:
        """Raise ValueError naming the first field with an unusable value (`OutOfBounds` for a
        hyper-parameter: the bounds are in services/trainer/hyperparameters.py)."""
        for name in BOUNDS:
            check(name, getattr(self, name))
        if self.num_threads is not None and self.num_threads < 1:
            raise ValueError(f"num_threads: must be >= 1 or None, got {self.num_threads}")

    def as_dict(self) -> dict[str, int | float | None]:
        return dataclasses.asdict(self)


@dataclass(frozen=True, eq=False)
class Interactions:
    """Deduplicated (user, item, weight) triples sorted by user then item."""

    users: np.ndarray  # int64
    items: np.ndarray  # int64
    weights: np.ndarray  # float32, > 0
    n_users: int
    n_items: int

    @classmethod
    def from_arrays(
        cls,
        users: np.ndarray,
        items: np.ndarray,
        weights: np.ndarray | None = None,
        *,
        n_users: int | None = None,
        n_items: int | None = None,
    ) -> Interactions:
        """Sum the weights of repeated pairs; sizes default to the largest index + 1."""
        u = np.asarray(users, dtype=np.int64)
        i = np.asarray(items, dtype=np.int64)
        w = np.ones(len(u), np.float64) if weights is None else np.asarray(weights, np.float64)
        if not len(u) == len(i) == len(w):
            raise ValueError("users, items and weights must have the same length")
        if len(u) and (u.min() < 0 or i.min() < 0):
            raise ValueError("indices must be non-negative")
        if not np.all(np.isfinite(w)) or np.any(w <= 0):
            raise ValueError("weights must be finite and positive")
        nu = (int(u.max()) + 1 if len(u) else 0) if n_users is None else n_users
        ni = (int(i.max()) + 1 if len(i) else 0) if n_items is None else n_items
        if len(u) and (u.max() >= nu or i.max() >= ni):
            raise ValueError("an index is out of range of n_users / n_items")
        keys, inverse = np.unique(u * ni + i, return_inverse=True)
        summed = np.bincount(inverse, weights=w, minlength=len(keys))
        return cls(keys // max(ni, 1), keys % max(ni, 1), summed.astype(np.float32), nu, ni)

    def __len__(self) -> int:
        return len(self.users)

    def indptr(self) -> np.ndarray:
        """CSR row pointers over users (the triples are already in CSR order)."""
        counts = np.bincount(self.users, minlength=self.n_users)
        return np.concatenate(([0], np.cumsum(counts))).astype(np.int64)

    def transpose(self) -> Interactions:
        """The same triples with users and items swapped (rows are items)."""
        order = np.lexsort((self.users, self.items))
        return Interactions(
            self.items[order], self.users[order], self.weights[order], self.n_items, self.n_users
        )


@dataclass(frozen=True, eq=False)
class Shard:
    """The rows one process solves: users ``[user_start, user_start + users.n_users)`` and
    items ``[item_start, item_start + items.n_users)``, each row with all of its interactions.

    ``users`` has this process's users as rows (numbered from 0) and every item as columns;
    ``items`` has its items as rows and every user as columns (a transposed view).
    """

    users: Interactions
    items: Interactions
    user_start: int = 0
    item_start: int = 0

    @classmethod
    def whole(cls, data: Interactions) -> Shard:
        """Every row: what one process fits alone."""
        return cls(data, data.transpose())

    @property
    def n_users(self) -> int:
        """Users in all shards."""
        return self.items.n_items

    @property
    def user_rows(self) -> slice:
        return slice(self.user_start, self.user_start + self.users.n_users)

    @property
    def item_rows(self) -> slice:
        return slice(self.item_start, self.item_start + self.items.n_users)

    @property
    def n_items(self) -> int:
        """Items in all shards."""
        return self.users.n_items


@dataclass(frozen=True, eq=False)
class FactorModel:
    """Trained factors; ``score`` is the dot product used for ranking."""

    user_factors: torch.Tensor  # (n_users, factors) float32
    item_factors: torch.Tensor  # (n_items, factors) float32
    config: TrainConfig

    def score(self, users: np.ndarray | torch.Tensor) -> torch.Tensor:
        idx = torch.as_tensor(users, dtype=torch.long)
        return self.user_factors[idx] @ self.item_factors.T

    def loss(self, data: Interactions) -> float:
        """The training objective on `data`: the weighted loss over all pairs plus penalties,
        divided by the total confidence (comparable across epochs and data sizes)."""
        config = self.config
        user_total = np.bincount(data.users, weights=data.weights, minlength=data.n_users)
        item_total = np.bincount(data.items, weights=data.weights, minlength=data.n_items)
        return _objective(
            data, self.user_factors, self.item_factors,
            user_reg=torch.from_numpy(_row_penalty(user_total, data.n_items, config)),
            item_reg=torch.from_numpy(_row_penalty(item_total, data.n_users, config)),
            config=config)


def _row_penalty(total_weight: np.ndarray | float, n_other: int, config: TrainConfig) -> np.ndarray:
    """Frequency-scaled penalty: grows with the total confidence of the row's loss terms."""
    base = n_other + config.alpha * np.asarray(total_weight, np.float64)
    return config.regularization * base**config.reg_exponent


@dataclass(frozen=True)
class _Batch:
    rows: torch.Tensor  # (B,) row ids
    cols: torch.Tensor  # (B, L) column ids, 0 where padded
    extra: torch.Tensor  # (B, L) confidence - 1 (alpha * weight), 0 where padded
    conf: torch.Tensor  # (B, L) confidence, 0 where padded
    reg: torch.Tensor  # (B,) penalty per row


def _batches(data: Interactions, config: TrainConfig) -> list[_Batch]:
    """Rows sorted by degree, padded into batches so that a solve is a few dense bmm calls."""
    indptr = data.indptr()
    degree = np.diff(indptr)
    total = np.bincount(data.users, weights=data.weights, minlength=data.n_users)
    reg = _row_penalty(total, data.n_items, config)
    order = np.argsort(-degree, kind="stable")
    neg_sorted = -degree[order]
    out: list[_Batch] = []
    start = 0
    while start < len(order):
        # Rows of similar degree share a batch, so padding wastes at most a quarter of it.
        longest = int(degree[order[start]])
        width = max(longest, 1)
        size = min(_MAX_BATCH_ROWS, max(1, _GATHER_BUDGET // (width * config.factors)))
        similar = int(np.searchsorted(neg_sorted, -0.75 * longest, side="right"))
        end = max(start + 1, min(start + size, similar))
        rows = order[start:end]
        start = end
        pos = indptr[rows][:, None] + np.arange(width)[None, :]
        mask = np.arange(width)[None, :] < degree[rows][:, None]
        pos = np.where(mask, pos, 0)
        cols = np.where(mask, data.items[pos] if len(data) else 0, 0)
        weight = np.where(mask, data.weights[pos] if len(data) else 0, 0).astype(np.float32)
        extra = config.alpha * weight
        out.append(
            _Batch(
                rows=torch.from_numpy(rows),
                cols=torch.from_numpy(cols),
                extra=torch.from_numpy(extra),
                conf=torch.from_numpy(np.where(mask, 1 + extra, 0).astype(np.float32)),
                reg=torch.from_numpy(reg[rows].astype(np.float32)),
            )
        )
    return out


def _solve(
    target: torch.Tensor, fixed: torch.Tensor, batches: list[_Batch], pool: ThreadPoolExecutor
) -> None:
    """Overwrite ``target`` rows with the exact weighted least-squares solution given ``fixed``.

    A row with L interactions solves ``(YᵀY + λI + Uᵀ D U) x = Uᵀ c`` (U: its L columns' factors,
    D: their confidence - 1, c: their confidence). Rows with at least f interactions build that
    f x f matrix and factorise it (Cholesky). Shorter rows, most rows of long-tailed data, use the
    Woodbury identity in the eigenbasis of YᵀY, where ``YᵀY + λI`` is diagonal for every λ: an
    L x L system instead of an f x f one, exact all the same, and tens of times cheaper for a row
    with a handful of interactions.
    """
    factors = fixed.shape[1]
    gram = fixed.T @ fixed
    eye = torch.eye(factors, dtype=fixed.dtype)
    eigenvalues, basis = (t.to(fixed.dtype) for t in torch.linalg.eigh(gram.double()))
    rotated = fixed @ basis  # the factors in the eigenbasis

    def dense(b: _Batch) -> torch.Tensor:
        gathered = fixed[b.cols]  # (B, L, f)
        lhs = torch.baddbmm(gram, (gathered * b.extra.unsqueeze(-1)).transpose(1, 2), gathered)
        lhs += b.reg[:, None, None] * eye
        rhs = (gathered * b.conf.unsqueeze(-1)).sum(1).unsqueeze(-1)
        return torch.cholesky_solve(rhs, torch.linalg.cholesky(lhs)).squeeze(-1)

    def low_rank(b: _Batch) -> torch.Tensor:
        # (S⁻¹ + VᵀV)⁻¹ = S - SVᵀ(I + VSVᵀ)⁻¹VS, with S = (Λ + λ)⁻¹ diagonal, V = D^½ U.
        gathered = rotated[b.cols]  # (B, L, f)
        inverse = 1.0 / (eigenvalues + b.reg[:, None])  # S, (B, f)
        first = inverse * (gathered * b.conf.unsqueeze(-1)).sum(1)  # S Uᵀc, (B, f)
        v = gathered * b.extra.sqrt().unsqueeze(-1)  # zero rows where padded
        small = torch.baddbmm(torch.eye(v.shape[1]), v * inverse.unsqueeze(1), v.transpose(1, 2))
        t = torch.cholesky_solve((v @ first.unsqueeze(-1)), torch.linalg.cholesky(small))
        solution = first - inverse * (v.transpose(1, 2) @ t).squeeze(-1)
        return solution @ basis.T

    def solve(b: _Batch) -> torch.Tensor:
        return low_rank(b) if b.cols.shape[1] < factors else dense(b)

    for b, solution in zip(batches, pool.map(solve, batches), strict=True):
        target[b.rows] = solution


def _objective(
    data: Interactions,
    users: torch.Tensor,
    items: torch.Tensor,
    *,
    user_reg: torch.Tensor,
    item_reg: torch.Tensor,
    config: TrainConfig,
) -> float:
    """Full weighted loss over all pairs plus penalties, divided by the total confidence.

    The all-pairs term is ``trace(XᵀX · YᵀY)``; observed pairs then swap their zero target
    for the weighted one, so the cost is linear in the number of interactions.
    """
    terms = _observed(data, users, items, config.alpha)
    terms += _penalty(user_reg, users) + _penalty(item_reg, items)
    return objective(terms, float(data.weights.sum(dtype=np.float64)), users, items, config)


def _observed(data: Interactions, users: torch.Tensor, items: torch.Tensor,
              alpha: float) -> float:
    """What the observed pairs change in the all-pairs term: the weighted loss against
    target 1 instead of the unweighted one against 0."""
    observed = 0.0
    # Chunks whose gathered factors stay in the CPU's cache: 3-5x faster than 2^18 rows.
    step = 1 << 14
    for s in range(0, len(data), step):
        u = torch.from_numpy(data.users[s : s + step])
        i = torch.from_numpy(data.items[s : s + step])
        conf = 1 + alpha * torch.from_numpy(data.weights[s : s + step]).double()
        pred = torch.einsum("nf,nf->n", users[u], items[i]).double()
        observed += float((conf * (1 - pred) ** 2 - pred**2).sum())
    return observed


def _penalty(reg: torch.Tensor, factors: torch.Tensor) -> float:
    return float(reg.double() @ factors.pow(2).sum(1).double())


def shard_loss_terms(shard: Shard, users: torch.Tensor, items: torch.Tensor,
                     config: TrainConfig) -> tuple[float, float]:
    """This shard's part of the objective's sums, given the whole factors: the observed
    terms of its users' interactions plus the penalties of its rows, and their total weight.
    Summed over all shards, ``objective`` of the sums is ``FactorModel.loss`` of all the data.
    """
    own_users, own_items = users[shard.user_rows], items[shard.item_rows]
    terms = _observed(shard.users, own_users, items, config.alpha)
    for side, own in ((shard.users, own_users), (shard.items, own_items)):
        total = np.bincount(side.users, weights=side.weights, minlength=side.n_users)
        terms += _penalty(torch.from_numpy(_row_penalty(total, side.n_items, config)), own)
    return terms, float(shard.users.weights.sum(dtype=np.float64))


def objective(terms: float, weight: float, users: torch.Tensor, items: torch.Tensor,
              config: TrainConfig) -> float:
    """The training objective from its sums over the data (``shard_loss_terms``): divided by
    the total confidence, so it compares across epochs and data sizes."""
    all_pairs = float(((users.T @ users).double() * (items.T @ items).double()).sum())
    total_conf = users.shape[0] * items.shape[0] + config.alpha * weight
    return (all_pairs + terms) / max(total_conf, 1.0)


@contextmanager
def _single_threaded_ops() -> Iterator[int]:
    """Run torch ops on the calling thread only; yields the thread count it replaced.

    Parallelism comes from solving batches on a few Python threads instead: each op here is
    small, and intra-op thread pools lose seconds to barrier waits on a busy machine (measured
    3-5x slower than one thread with two cores shared). It also makes results independent of
    the thread count. The setting is process-wide, so fits in one process take turns.
    """
    with _FIT_LOCK:
        previous = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield previous
        finally:
            torch.set_num_threads(previous)


def fit(
    data: Interactions,
    config: TrainConfig | None = None,
    *,
    on_epoch: ProgressCallback | None = None,
    should_cancel: CancelCheck | None = None,
) -> FactorModel:
    """Train iALS; ``on_epoch(epoch, epochs, model)`` runs after each epoch (1-based) with the
    factors so far (``model.loss(data)`` gives the objective; copy the tensors to keep them).

    ``should_cancel`` is polled before every half-epoch; when it returns True,
    ``TrainingCancelled`` is raised. The result depends only on the data and the seed (every
    batch is solved single-threaded, whatever ``num_threads`` is).
    """
    return fit_shard(Shard.whole(data), config, on_epoch=on_epoch, should_cancel=should_cancel)


def fit_shard(
    shard: Shard,
    config: TrainConfig | None = None,
    *,
    exchange: Exchange | None = None,
    on_epoch: ProgressCallback | None = None,
    should_cancel: CancelCheck | None = None,
) -> FactorModel:
    """``fit`` for the rows of `shard`: every process of a group calls it with its own shard
    and an `exchange` that shares the rows it solved (None: the shard is the whole data).

    Every process starts from the same seeded factors and solves each of its rows exactly as
    ``fit`` would, so the result equals ``fit``'s up to floating-point rounding (a row's batch
    and padding differ).
    """
    config = config or TrainConfig()
    config.validate()
    with (
        _single_threaded_ops() as available,
        ThreadPoolExecutor(config.num_threads or available, "ials") as pool,
    ):
        user_batches = _batches(shard.users, config)
        item_batches = _batches(shard.items, config)
        generator = torch.Generator().manual_seed(config.seed)
        std = config.init_std / math.sqrt(config.factors)
        users = torch.randn(shard.n_users, config.factors, generator=generator) * std
        items = torch.zeros(shard.n_items, config.factors)
        sides: list[tuple[Side, torch.Tensor, torch.Tensor, list[_Batch], slice]] = [
            ("items", items, users, item_batches, shard.item_rows),
            ("users", users, items, user_batches, shard.user_rows),
        ]
        for epoch in range(1, config.epochs + 1):
            for side, target, fixed, batches, rows in sides:
                if should_cancel is not None and should_cancel():
                    raise TrainingCancelled(f"cancelled in epoch {epoch}")
                _solve(target[rows], fixed, batches, pool)  # a view: solved in place
                if exchange is not None:
                    exchange(target, side)
            if on_epoch is not None:
                on_epoch(epoch, config.epochs, FactorModel(users, items, config))
    return FactorModel(users, items, config)
