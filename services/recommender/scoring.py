"""Ranking with one model version: vectorised torch over the whole catalogue, then top-k.

A `Scorer` is built once per loaded version and never changes, so any number of requests (and
worker threads) read it at the same time without locks. Recommend queries are scored in
batches: one matrix product and one top-k serve every query of a batch, so concurrent requests
share the pass over the item factors (the cost that dominates large catalogues) and the fixed
cost of each torch call (the one that dominates small ones).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

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


@dataclass(frozen=True)
class Query:
    """One user's Recommend request as scoring sees it. `recent_item_ids` (newest first) are
    interactions since training: excluded with the training items when `exclude_seen`, and
    used to fold in a user the model does not know."""

    user_id: str
    k: int
    exclude_seen: bool = True
    exclude_item_ids: Sequence[str] = ()
    recent_item_ids: Sequence[str] = ()


class Scorer:
    """Scores items for users (dot product) and items for items (cosine)."""

    def __init__(self, artifact: ModelArtifact) -> None:
        self._artifact = artifact
        self.item_ids: list[str] = artifact.item_ids.tolist()
        self._item_index = {item: i for i, item in enumerate(self.item_ids)}
        self._user_index = {user: i for i, user in enumerate(artifact.user_ids.tolist())}
        self._users = artifact.user_factors
        self._items = torch.from_numpy(artifact.item_factors)
        # Scores are vectors @ (factors, n_items): on CPU about twice as fast as the product
        # with (n_items, factors) rows, which matters for large catalogues.
        self._items_t = self._items.T.contiguous()
        # An all-zero item (never seen in training) gets cosine 0, not NaN.
        self._norms = self._items.norm(dim=1).clamp_min(1e-12)
        self._popularity = torch.from_numpy(artifact.item_popularity.astype(np.float32))
        self._seen_indptr = artifact.seen_indptr.tolist()
        self._seen = artifact.seen_indices

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def knows_item(self, item_id: str) -> bool:
        return item_id in self._item_index

    def recommend(self, user_id: str, *, k: int, exclude_seen: bool,
                  exclude_item_ids: Iterable[str] = (),
                  recent_item_ids: Sequence[str] = ()) -> tuple[Strategy, Ranked]:
        """Top-k items for one user (see `Query`)."""
        query = Query(user_id, k, exclude_seen, tuple(exclude_item_ids), recent_item_ids)
        return self.recommend_many([query])[0]

    def recommend_many(self, queries: Sequence[Query]) -> list[tuple[Strategy, Ranked]]:
        """Top-k items for each query, in order."""
        n = self.n_items
        vectors = np.zeros((len(queries), self._users.shape[1]), dtype=np.float32)
        strategies: list[Strategy] = []
        popular: list[int] = []
        banned: list[np.ndarray] = []  # positions in the flattened (queries, items) scores
        for i, query in enumerate(queries):
            recent = self._indices(query.recent_item_ids)
            row = self._user_index.get(query.user_id)
            if row is not None:
                strategies.append(Strategy.PERSONALIZED)
                vectors[i] = self._users[row]
            elif recent:
                strategies.append(Strategy.FOLD_IN)
                vectors[i] = self._artifact.fold_in(np.asarray(recent))
            else:
                strategies.append(Strategy.POPULARITY)
                popular.append(i)
            excluded = self._indices(query.exclude_item_ids)
            if query.exclude_seen:
                excluded += recent
                if row is not None:
                    seen = self._seen[self._seen_indptr[row] : self._seen_indptr[row + 1]]
                    banned.append(seen + i * n)
            if excluded:
                banned.append(np.asarray(excluded) + i * n)
        scores = torch.from_numpy(vectors) @ self._items_t
        if popular:
            scores[popular] = self._popularity
        if banned:
            scores.view(-1)[torch.from_numpy(np.concatenate(banned))] = _NEG_INF
        values, rows = torch.topk(scores, min(max(q.k for q in queries), n))
        return [(strategy, self._ranked(row_values[: query.k], row_rows[: query.k]))
                for strategy, query, row_values, row_rows
                in zip(strategies, queries, values.tolist(), rows.tolist(), strict=True)]

    def similar(self, item_id: str, *, k: int) -> Ranked:
        """The k items with the highest cosine similarity to `item_id` (itself left out)."""
        row = self._item_index.get(item_id)
        if row is None:
            raise NotFound(f"item {item_id!r} is not in the model")
        scores = (self._items[row] @ self._items_t) / (self._norms * self._norms[row])
        scores[row] = _NEG_INF
        values, rows = torch.topk(scores, min(k, len(scores)))
        return self._ranked(values.tolist(), rows.tolist())

    def _indices(self, item_ids: Iterable[str]) -> list[int]:
        """Catalogue rows of the known ids among `item_ids` (unknown ones are ignored)."""
        index = self._item_index
        return [index[item] for item in item_ids if item in index]

    def _ranked(self, values: list[float], rows: list[int]) -> Ranked:
        """(id, score) pairs of the top rows, without the excluded (-inf) ones."""
        ids = self.item_ids
        return tuple((ids[row], value) for row, value in zip(rows, values, strict=True)
                     if value != _NEG_INF)
