"""Each known user's best items, ranked once per model version: exact answers without scoring.

A known user's default query (training items excluded) ranks the same vectors every time;
only the recent interactions and the request's exclude list change between requests. So when a
version loads, every user's top `LENGTH` items (training items left out) are ranked exactly, in
chunks of users, and a request takes its list, drops what it excludes and keeps the first k.
That is the exact answer whenever at least k items survive; otherwise (or for a query the
lists do not cover: unknown users, `exclude_seen` off) the caller scores as usual.

Costs: users x items products at load (about 14 s for 20,000 x 100,000 x 64 factors on one
core here) and users x LENGTH x 8 bytes in memory, hence the budgets
RECSYS_RECOMMENDER_TOP_LISTS_MAX_CELLS and RECSYS_RECOMMENDER_TOP_LISTS_MAX_USERS.
"""

from __future__ import annotations

from collections.abc import Callable, Container
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
    def build(cls, n_users: int, rank: Callable[[range, int], tuple[torch.Tensor, torch.Tensor]],
              ) -> TopLists:
        """Lists for users 0..n_users-1; `rank(users, length)` gives those users' exact
        (scores, rows) of their best `length` items, training items left out."""
        parts = [rank(range(first, min(first + _CHUNK_USERS, n_users)), LENGTH)
                 for first in range(0, n_users, _CHUNK_USERS)]
        return cls(rows=np.concatenate([rows.numpy() for _, rows in parts]).astype(np.int32),
                   scores=np.concatenate([scores.numpy() for scores, _ in parts]))

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
