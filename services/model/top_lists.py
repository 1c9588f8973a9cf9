"""Each known user's best items, ranked once per model version: exact answers without scoring.

A known user's default query (training items excluded) ranks the same vectors every time;
only the recent interactions and the request's exclude list change between requests. So every
user's top `LENGTH` items (training items left out) are ranked exactly once, by the trainer
when it packages a version (shipped in the artifact), or by the recommender when it loads an
artifact made before lists were shipped; a request takes its list, drops what it excludes and
keeps the first k. That is the exact answer whenever at least k items survive; otherwise (or
for a query the lists do not cover: unknown users, `exclude_seen` off) the caller scores.

Costs: users x items products once (about 7 s per 10^9 cells with 64 factors on one core
here) and users x LENGTH x 8 bytes, in the artifact and in the recommender's memory.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import numpy as np

LENGTH = 128
# Users ranked per product: their scores take 4 bytes x catalogue size each.
_CHUNK_USERS = 256


@dataclass(frozen=True)
class TopLists:
    """Never modified once built, so threads share it freely."""

    rows: np.ndarray  # (users, min(LENGTH, items)) int32: catalogue rows, best first
    scores: np.ndarray  # same shape, float32; -inf past the user's last allowed item

    @classmethod
    def rank(cls, user_factors: np.ndarray, item_factors: np.ndarray, seen_indptr: np.ndarray,
             seen_indices: np.ndarray) -> TopLists:
        """Every user's exact best items by dot product, the user's `seen` items (CSR, as in
        the artifact) left out."""
        n_users, n_items = len(user_factors), len(item_factors)
        length = min(LENGTH, n_items)
        items_t = np.ascontiguousarray(item_factors.T, dtype=np.float32)
        rows = np.empty((n_users, length), np.int32)
        scores = np.empty((n_users, length), np.float32)
        for first in range(0, n_users, _CHUNK_USERS):
            last = min(first + _CHUNK_USERS, n_users)
            chunk = user_factors[first:last].astype(np.float32) @ items_t
            starts, ends = seen_indptr[first:last], seen_indptr[first + 1 : last + 1]
            owners = np.repeat(np.arange(last - first), ends - starts)
            chunk[owners, seen_indices[starts[0] : ends[-1]]] = -np.inf
            best = np.argpartition(chunk, n_items - length, axis=1)[:, n_items - length :]
            values = np.take_along_axis(chunk, best, axis=1)
            order = np.argsort(-values, axis=1, kind="stable")
            rows[first:last] = np.take_along_axis(best, order, axis=1)
            scores[first:last] = np.take_along_axis(values, order, axis=1)
        return cls(rows=rows, scores=scores)

    def pick(self, user: int, k: int, excluded: Collection[int]
             ) -> list[tuple[int, float]] | None:
        """The user's best k (row, score) without `excluded`, or None when the list holds
        fewer than k such items (the caller must score). Only the first k + len(excluded)
        entries can hold the answer, so only they are read."""
        end = k + len(excluded)
        rows, scores = self.rows[user, :end].tolist(), self.scores[user, :end].tolist()
        picked = [(row, score) for row, score in zip(rows, scores, strict=True)
                  if row not in excluded][:k]
        # Scores are sorted, -inf past the last allowed item: the last pick shows a short list.
        if len(picked) < k or (picked and picked[-1][1] == float("-inf")):
            return None
        return picked
