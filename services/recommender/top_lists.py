"""Each known user's best items, ranked once per model version: exact answers without scoring.

A known user's default query (training items excluded) ranks the same vectors every time;
only the recent interactions and the request's exclude list change between requests. So when a
version loads, every user's top `LENGTH` items (training items left out) are ranked exactly, in
chunks of users, and a request takes its list, drops what it excludes and keeps the first k.
That is the exact answer whenever at least k items survive; otherwise (or for a query the
lists do not cover: unknown users, `exclude_seen` off) the caller scores as usual.

Costs: users x items products at load (about 10 s for 20,000 x 100,000 x 64 factors on one
core here) and users x LENGTH x 8 bytes in memory, hence a size budget (`max_cells`).
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass

import numpy as np
import torch

LENGTH = 128
# Users ranked per product: their scores take 4 bytes x catalogue size each.
_CHUNK_USERS = 256


@dataclass(frozen=True)
class TopLists:
    """Never modified once built, so threads share it freely."""

    rows: np.ndarray  # (users, LENGTH) int32: catalogue rows, best first
    scores: np.ndarray  # (users, LENGTH) float32; -inf past the user's last allowed item

    @classmethod
    def build(cls, users: torch.Tensor, items_t: torch.Tensor, seen_indptr: np.ndarray,
              seen: np.ndarray) -> TopLists:
        """Rank every user (rows of `users`) against `items_t` (factors, items), leaving out
        each user's training items (CSR `seen_indptr`, `seen`)."""
        n_items = items_t.shape[1]
        length = min(LENGTH, n_items)
        rows = np.empty((len(users), length), dtype=np.int32)
        scores = np.empty((len(users), length), dtype=np.float32)
        for first in range(0, len(users), _CHUNK_USERS):
            last = min(first + _CHUNK_USERS, len(users))
            chunk = users[first:last] @ items_t
            start, end = seen_indptr[first], seen_indptr[last]
            owners = np.repeat(np.arange(last - first), np.diff(seen_indptr[first : last + 1]))
            chunk.view(-1)[torch.from_numpy(owners * n_items + seen[start:end])] = float("-inf")
            values, top = torch.topk(chunk, length)
            rows[first:last], scores[first:last] = top.numpy(), values.numpy()
        return cls(rows, scores)

    def pick(self, user: int, k: int, excluded: Container[int]) -> list[tuple[int, float]] | None:
        """The user's best k (row, score) without `excluded`, or None when the list holds
        fewer than k such items (the caller must score)."""
        picked: list[tuple[int, float]] = []
        for row, score in zip(self.rows[user].tolist(), self.scores[user].tolist(), strict=True):
            if score == float("-inf"):
                return None
            if row not in excluded:
                picked.append((row, score))
                if len(picked) == k:
                    return picked
        return None
