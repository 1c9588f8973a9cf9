"""Ranking with one model version: vectorised torch over the whole catalogue, then top-k.

A `Scorer` is built once per loaded version and never changes, so any number of requests (and
worker threads) read it at the same time without locks.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence

import numpy as np
import torch

from services.core.errors import NotFound
from services.trainer.artifact import ModelArtifact

# (item_id, score) pairs, best first.
Ranked = tuple[tuple[str, float], ...]

_NEG_INF = float("-inf")


class Strategy(enum.Enum):
    PERSONALIZED = "personalized"  # the user's trained vector
    FOLD_IN = "fold_in"  # an unknown user, solved from their recent interactions
    POPULARITY = "popularity"  # nothing known about the user


class Scorer:
    """Scores items for users (dot product) and items for items (cosine)."""

    def __init__(self, artifact: ModelArtifact) -> None:
        self._artifact = artifact
        self.item_ids: list[str] = artifact.item_ids.tolist()
        self._item_index = {item: i for i, item in enumerate(self.item_ids)}
        self._user_index = {user: i for i, user in enumerate(artifact.user_ids.tolist())}
        self._users = torch.from_numpy(artifact.user_factors)
        self._items = torch.from_numpy(artifact.item_factors)
        # Scores are vector @ (factors, n_items): on CPU about twice as fast as the mat-vec
        # over (n_items, factors) rows, which matters for large catalogues.
        self._items_t = self._items.T.contiguous()
        # An all-zero item (never seen in training) gets cosine 0, not NaN.
        self._norms = self._items.norm(dim=1).clamp_min(1e-12)
        self._popularity = torch.from_numpy(artifact.item_popularity.astype(np.float32))
        self._seen_indptr = artifact.seen_indptr
        self._seen = torch.from_numpy(artifact.seen_indices)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def knows_item(self, item_id: str) -> bool:
        return item_id in self._item_index

    def recommend(self, user_id: str, *, k: int, exclude_seen: bool,
                  exclude_item_ids: Iterable[str] = (),
                  recent_item_ids: Sequence[str] = ()) -> tuple[Strategy, Ranked]:
        """Top-k items for a user; `recent_item_ids` (newest first) are interactions since
        training, excluded with the training items when `exclude_seen` and used to fold in a
        user the model does not know."""
        recent = self._indices(recent_item_ids)
        row = self._user_index.get(user_id)
        if row is not None:
            strategy, scores = Strategy.PERSONALIZED, self._users[row] @ self._items_t
        elif recent:
            vector = torch.from_numpy(self._artifact.fold_in(np.asarray(recent)))
            strategy, scores = Strategy.FOLD_IN, vector @ self._items_t
        else:
            strategy, scores = Strategy.POPULARITY, self._popularity.clone()
        banned = self._indices(exclude_item_ids)
        if exclude_seen:
            banned += recent
            if row is not None:
                scores[self._seen[self._seen_indptr[row] : self._seen_indptr[row + 1]]] = _NEG_INF
        if banned:
            scores[torch.tensor(banned)] = _NEG_INF
        return strategy, self._top(scores, k)

    def similar(self, item_id: str, *, k: int) -> Ranked:
        """The k items with the highest cosine similarity to `item_id` (itself left out)."""
        row = self._item_index.get(item_id)
        if row is None:
            raise NotFound(f"item {item_id!r} is not in the model")
        scores = (self._items[row] @ self._items_t) / (self._norms * self._norms[row])
        scores[row] = _NEG_INF
        return self._top(scores, k)

    def _indices(self, item_ids: Iterable[str]) -> list[int]:
        """Catalogue rows of the known ids among `item_ids` (unknown ones are ignored)."""
        index = self._item_index
        return [index[item] for item in item_ids if item in index]

    def _top(self, scores: torch.Tensor, k: int) -> Ranked:
        values, rows = torch.topk(scores, min(k, len(scores)))
        ids = self.item_ids
        return tuple(
            (ids[row], value)
            for row, value in zip(rows.tolist(), values.tolist(), strict=True)
            if value != _NEG_INF
        )
