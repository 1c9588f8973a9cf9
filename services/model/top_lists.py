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

from collections.abc import Collection
from dataclasses import dataclass

import numpy as np

LENGTH = 128
# Scores computed per product: users x catalogue cells of 4 bytes (256 MiB), however large the
# catalogue; large products keep torch's matrix product efficient.
_CHUNK_CELLS = 1 << 26


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

        In torch (a multi-threaded product, and `topk`: a third of the time of numpy's
        argpartition and argsort), imported here so that reading an artifact never needs it:
        only the trainer and the recommender rank, and both have torch.
        """
        import torch

        n_users, n_items = len(user_factors), len(item_factors)
        length = min(LENGTH, n_items)
        users = torch.from_numpy(np.ascontiguousarray(user_factors, dtype=np.float32))
        items_t = torch.from_numpy(np.ascontiguousarray(item_factors.T, dtype=np.float32))
        rows = torch.empty((n_users, length), dtype=torch.int64)
        scores = torch.empty((n_users, length), dtype=torch.float32)
        step = max(1, _CHUNK_CELLS // max(n_items, 1))
        for first in range(0, n_users, step):
            last = min(first + step, n_users)
            chunk = users[first:last] @ items_t
            starts, ends = seen_indptr[first:last], seen_indptr[first + 1 : last + 1]
            owners = np.repeat(np.arange(last - first), ends - starts)
            seen = seen_indices[starts[0] : ends[-1]].astype(np.int64)
            chunk[torch.from_numpy(owners), torch.from_numpy(seen)] = -torch.inf
            torch.topk(chunk, length, dim=1, out=(scores[first:last], rows[first:last]))
        return cls(rows=rows.numpy().astype(np.int32), scores=scores.numpy())

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
