"""Each known user's best items, ranked once per model version: exact answers without scoring.

A known user's default query (training items excluded) ranks the same vectors every time;
only the recent interactions and the request's exclude list change between requests. So every
user's top `LENGTH` items (training items left out) are ranked exactly once, by the trainer
when it packages a version (shipped in the artifact), or by the recommender when it loads an
artifact made before lists were shipped; a request takes its list, drops what it excludes and
keeps the first k. That is the exact answer whenever at least k items survive; otherwise (or
for a query the lists do not cover: unknown users, `exclude_seen` off) the caller scores.

Costs: users x items products once (about 4 s per 10^9 cells with 64 factors on this 2-core
machine) and users x LENGTH x 8 bytes, in the artifact and in the recommender's memory.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass

import numpy as np

LENGTH = 128
# Scores computed per product: users x items cells of 4 bytes (256 MiB), however large the
# catalogue; large products keep torch's matrix product efficient.
_CHUNK_CELLS = 1 << 26
# Items (the largest by norm) the first pass scores; a catalogue of at most twice this is
# ranked in one pass.
_FIRST_PASS_ITEMS = 2048
# Of the largest item norm: more than the product's float32 rounding, so no item is missed.
_MARGIN = 1e-4


@dataclass(frozen=True)
class TopLists:
    """Never modified once built, so threads share it freely."""

    rows: np.ndarray  # (users, min(LENGTH, items)) int32: catalogue rows, best first
    scores: np.ndarray  # same shape, float32; -inf past the user's last allowed item

    @classmethod
    def rank(cls, user_factors: np.ndarray, item_factors: np.ndarray, seen_indptr: np.ndarray,
             seen_indices: np.ndarray) -> TopLists:
        """Every user's exact best items by dot product, the user's `seen` items (CSR, as in
        the artifact) left out.

        Items are scored in norm order, largest first, in two passes. A score is at most
        |user| x |item|: once the first `_FIRST_PASS_ITEMS` give a user `LENGTH` allowed
        scores of at least s, no item of norm below s / |user| can enter its list, so the
        second pass scores each user against only the items it needs (for most users of the
        27,000-item scale model, about a fifth), users grouped by that count.

        In torch (a multi-threaded product, and `topk`: a third of the time of numpy's
        argpartition and argsort), imported here so that reading an artifact never needs it:
        only the trainer and the recommender rank, and both have torch.
        """
        import torch

        n_users, n_items = len(user_factors), len(item_factors)
        length = min(LENGTH, n_items)
        norms = np.linalg.norm(item_factors, axis=1)
        by_norm = np.argsort(-norms, kind="stable")
        column = np.empty(n_items, np.int64)  # each item's place in norm order
        column[by_norm] = np.arange(n_items)
        seen_columns, seen_counts = column[seen_indices], np.diff(seen_indptr)
        users = torch.from_numpy(np.ascontiguousarray(user_factors, dtype=np.float32))
        items_t = torch.from_numpy(
            np.ascontiguousarray(item_factors[by_norm].T, dtype=np.float32))

        def best(chosen: np.ndarray, n_columns: int) -> tuple[np.ndarray, np.ndarray]:
            """The best `length` (scores, columns) of users `chosen` among the first
            `n_columns` items in norm order, seen items left out."""
            chunk = users[torch.from_numpy(chosen)] @ items_t[:, :n_columns]
            starts, counts = seen_indptr[chosen], seen_counts[chosen]
            owners = np.repeat(np.arange(len(chosen)), counts)
            within = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
            columns = seen_columns[np.repeat(starts, counts) + within]
            kept = columns < n_columns
            chunk[torch.from_numpy(owners[kept]), torch.from_numpy(columns[kept])] = -torch.inf
            values, indices = torch.topk(chunk, length, dim=1)
            return values.numpy(), indices.numpy()

        needed = np.full(n_users, n_items)
        if n_items > 2 * _FIRST_PASS_ITEMS:
            first_pass = _first_pass_bounds(best, n_users)
            with np.errstate(divide="ignore", invalid="ignore"):
                least = first_pass / np.linalg.norm(user_factors, axis=1) - _MARGIN * norms.max()
            least[np.isnan(least)] = -np.inf  # a zero user: every item ties, rank them all
            needed = np.searchsorted(-norms[by_norm], -least, side="right")
            needed = np.clip(needed, _FIRST_PASS_ITEMS, n_items)
        rows = np.empty((n_users, length), np.int32)
        scores = np.empty((n_users, length), np.float32)
        order = np.argsort(needed, kind="stable")
        start = 0
        while start < n_users:
            cells = np.arange(1, n_users - start + 1) * needed[order[start:]]
            end = start + max(1, int(np.searchsorted(cells, _CHUNK_CELLS, side="right")))
            chosen = order[start:end]
            values, columns = best(chosen, int(needed[chosen[-1]]))
            rows[chosen], scores[chosen] = by_norm[columns], values
            start = end
        return cls(rows=rows, scores=scores)

    def pick(self, user: int, k: int, excluded: Collection[int],
             blocked: Collection[int] = frozenset()) -> list[tuple[int, float]] | None:
        """The user's best k (row, score) in neither `excluded` nor `blocked` (two containers,
        so that a large shared one is not copied per request), or None when the list holds
        fewer than k such items (the caller must score). Only the first k + len(excluded) +
        len(blocked) entries can hold the answer, so only they are read."""
        end = k + len(excluded) + len(blocked)
        rows, scores = self.rows[user, :end].tolist(), self.scores[user, :end].tolist()
        picked = [(row, score) for row, score in zip(rows, scores, strict=True)
                  if row not in excluded and row not in blocked][:k]
        # Scores are sorted, -inf past the last allowed item: the last pick shows a short list.
        if len(picked) < k or (picked and picked[-1][1] == float("-inf")):
            return None
        return picked


def _first_pass_bounds(best: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]],
                       n_users: int) -> np.ndarray:
    """Each user's `LENGTH`-th best allowed score among the largest `_FIRST_PASS_ITEMS`
    items (-inf when it has fewer allowed there): its list's last score is at least that."""
    bounds = np.empty(n_users, np.float32)
    step = max(1, _CHUNK_CELLS // _FIRST_PASS_ITEMS)
    for start in range(0, n_users, step):
        chosen = np.arange(start, min(start + step, n_users))
        bounds[chosen] = best(chosen, _FIRST_PASS_ITEMS)[0][:, -1]
    return bounds
