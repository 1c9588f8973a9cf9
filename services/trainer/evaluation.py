"""The offline quality protocol shared by the trainer's quality gate, MLflow and the benchmarks.

Every interaction is an implicit positive. Each user's distinct items are shuffled and split
75% train / 25% test (seed 42); models rank all items except the user's training items, and
Precision, Recall, NDCG and MAP at 10 are averaged over the users that have test items.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from services.trainer.model import Interactions

ScoreFn = Callable[[np.ndarray], torch.Tensor | np.ndarray]
# Score-matrix elements per batch of users (64 MiB of float32), whatever the catalogue size.
_SCORE_BUDGET = 1 << 24


@runtime_checkable
class Scorer(Protocol):
    """Anything that scores all items for a batch of user indices (e.g. ``FactorModel``)."""

    def score(self, users: np.ndarray) -> torch.Tensor: ...


@dataclass(frozen=True)
class RankingMetrics:
    precision: float
    recall: float
    ndcg: float
    map: float
    users_evaluated: int
    k: int = 10

    def as_dict(self) -> dict[str, float]:
        return {
            f"precision_at_{self.k}": self.precision,
            f"recall_at_{self.k}": self.recall,
            f"ndcg_at_{self.k}": self.ndcg,
            f"map_at_{self.k}": self.map,
        }


def stratified_split(
    users: np.ndarray,
    items: np.ndarray,
    weights: np.ndarray | None = None,
    *,
    ratio: float = 0.75,
    seed: int = 42,
    n_users: int | None = None,
    n_items: int | None = None,
) -> tuple[Interactions, Interactions]:
    """Split each user's distinct items at random: ``round(ratio * n)`` (at least 1) go to train.

    Users are visited in index order and each one's sorted distinct items are shuffled with one
    ``numpy.random.Generator(seed)``, so the split is reproducible from the protocol's wording
    alone. Repeated pairs are merged first (weights summed).
    """
    if not 0 < ratio <= 1:
        raise ValueError(f"ratio: must be in (0, 1], got {ratio!r}")
    data = Interactions.from_arrays(users, items, weights, n_users=n_users, n_items=n_items)
    rng = np.random.default_rng(seed)
    indptr = data.indptr()
    in_train = np.zeros(len(data), bool)
    for start, end in zip(indptr[:-1].tolist(), indptr[1:].tolist(), strict=True):
        if end > start:
            n_train = max(1, round(ratio * (end - start)))
            in_train[start + rng.permutation(end - start)[:n_train]] = True
    return _subset(data, in_train), _subset(data, ~in_train)


def sample_users(data: Interactions, max_rows: int, rng: np.random.Generator, *,
                 max_users: int | None = None) -> np.ndarray | None:
    """A random sample of users whose interactions in `data` add up to at most `max_rows`
    and who number at most `max_users` (at least one user); None when `data` is within both
    (nothing to drop)."""
    if len(data) <= max_rows and (max_users is None or data.n_users <= max_users):
        return None
    order = rng.permutation(data.n_users)
    rows = np.bincount(data.users, minlength=data.n_users)[order]
    kept = max(1, int(np.searchsorted(np.cumsum(rows), max_rows, "right")))
    return order[: kept if max_users is None else min(kept, max_users)]


def only_users(data: Interactions, kept: np.ndarray) -> Interactions:
    """The rows of users `kept`, renumbered 0..len(kept)-1 (so fits skip the others)."""
    renumber = np.full(data.n_users, -1, np.int64)
    renumber[np.sort(kept)] = np.arange(len(kept))
    mask = renumber[data.users] >= 0
    return Interactions(renumber[data.users[mask]], data.items[mask], data.weights[mask],
                        len(kept), data.n_items)


def evaluation_sample(data: Interactions, *, max_rows: int, max_users: int,
                      seed: int = 42) -> Interactions:
    """The users the protocol is applied to: all of them while `data` holds at most
    `max_rows` interactions and `max_users` users (the protocol's figures, exactly); beyond, a
    seeded random sample of whole users within both, so that the evaluation's fit (which grows
    with the rows) and its ranking (users x items) stop growing with the data (its figures then
    estimate the protocol's)."""
    kept = sample_users(data, max_rows, np.random.default_rng(seed), max_users=max_users)
    return data if kept is None else only_users(data, kept)


def popularity(train: Interactions) -> ScoreFn:
    """The baseline a personal model must beat: every user gets items ranked by how many
    training interactions they have."""
    counts = torch.from_numpy(np.bincount(train.items, minlength=train.n_items)).float()
    return lambda users: counts.expand(len(users), -1)


def _subset(data: Interactions, mask: np.ndarray) -> Interactions:
    return Interactions(
        data.users[mask], data.items[mask], data.weights[mask], data.n_users, data.n_items
    )


def evaluate(
    scorer: Scorer | ScoreFn,
    train: Interactions,
    test: Interactions,
    *,
    k: int = 10,
    batch_users: int = 1024,
) -> RankingMetrics:
    """Rank all items but each user's training items; average the metrics over test users.

    ``scorer`` returns a (len(users), n_items) score matrix for an array of user indices.
    Precision divides hits by k, recall by the number of test items; NDCG uses binary gains and
    an ideal DCG over ``min(k, |test|)`` items; AP@k is normalised by ``min(k, |test|)``.
    """
    if k < 1:
        raise ValueError(f"k: must be >= 1, got {k!r}")
    score_fn = scorer.score if isinstance(scorer, Scorer) else scorer
    n_items = test.n_items
    test_users = np.unique(test.users)
    test_ptr, train_ptr = test.indptr(), train.indptr()
    top = min(k, n_items)
    discount = 1.0 / torch.log2(torch.arange(2, top + 2, dtype=torch.float64))
    ideal = torch.cat((torch.zeros(1, dtype=torch.float64), discount.cumsum(0)))
    ranks = torch.arange(1, top + 1, dtype=torch.float64)
    sums = torch.zeros(4, dtype=torch.float64)
    step = max(1, min(batch_users, _SCORE_BUDGET // max(n_items, 1)))
    for start in range(0, len(test_users), step):
        batch = test_users[start : start + step]
        scores = torch.as_tensor(score_fn(batch), dtype=torch.float32).clone()
        seen_rows, seen_cols = _rows_cols(batch, train_ptr, train.items)
        scores[seen_rows, seen_cols] = -torch.inf
        relevant = torch.zeros(len(batch), n_items, dtype=torch.bool)
        relevant[_rows_cols(batch, test_ptr, test.items)] = True
        # Test rows hold distinct items (Interactions sums repeats): a row's length is its
        # count, which summing the dense mask would find at a cost of users x items.
        n_relevant = torch.from_numpy((test_ptr[batch + 1] - test_ptr[batch]).astype(np.float64))
        hits = relevant.gather(1, scores.topk(top, dim=1).indices).double()
        n_hits = hits.sum(1)
        capped = n_relevant.clamp(max=top).long()
        precision_at = hits.cumsum(1) / ranks
        sums += torch.stack(
            (
                (n_hits / k).sum(),
                (n_hits / n_relevant).sum(),
                ((hits @ discount) / ideal[capped]).sum(),
                ((precision_at * hits).sum(1) / capped).sum(),
            )
        )
    count = len(test_users)
    p, r, n, m = (float(v) / count if count else 0.0 for v in sums)
    return RankingMetrics(precision=p, recall=r, ndcg=n, map=m, users_evaluated=count, k=k)


def _rows_cols(
    batch: np.ndarray, indptr: np.ndarray, cols: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor]:
    """(batch row, column) pairs of the CSR rows ``batch``, for fancy indexing."""
    starts, ends = indptr[batch], indptr[batch + 1]
    lengths = ends - starts
    rows = np.repeat(np.arange(len(batch)), lengths)
    pos = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return torch.from_numpy(rows), torch.from_numpy(cols[np.repeat(starts, lengths) + pos])
