"""Ranking with one model version: vectorised torch over the catalogue, then top-k.

A `Scorer` is built once per loaded version and never changes, so any number of requests (and
worker threads) read it at the same time without locks. Recommend queries are scored in
batches: one matrix product and one top-k serve every query of a batch, so concurrent requests
share the pass over the item factors (the cost that dominates large catalogues) and the fixed
cost of each torch call (the one that dominates small ones). A large catalogue is searched
through an `ItemIndex` instead, when one calibrated on the version's own users reaches the
target recall; popularity answers and queries the index cannot fill are still scored exactly.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from services.core.errors import NotFound
from services.model.artifact import ModelArtifact
from services.model.top_lists import TopLists
from services.recommender.item_index import BLOCK, ItemIndex

# (item_id, score) pairs, best first.
Ranked = tuple[tuple[str, float], ...]

_NEG_INF = float("-inf")
# The sample an item index is calibrated on: enough users for a recall within about +-0.02.
CALIBRATION_USERS = 256
CALIBRATION_K = 10


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

    def __init__(self, artifact: ModelArtifact, *, index_min_items: int = 0,
                 target_recall: float = 0.95, top_lists_max_cells: int = 0,
                 top_lists_max_users: int = 0) -> None:
        """Catalogues of `index_min_items` or more (0: never) are searched through an
        `ItemIndex` calibrated to `target_recall`, if one reaches it (see `item_index`);
        known users' answers come from the artifact's top lists (the trainer's) or, for an
        artifact without them, from lists ranked here when users x items is at most
        `top_lists_max_cells` and users at most `top_lists_max_users` (see `top_lists`)."""
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
        self.index: ItemIndex | None = None
        if index_min_items and self.n_items >= index_min_items:
            self.index = self._calibrated_index(target_recall)
        self.top_lists = artifact.top_lists
        if (self.top_lists is None and 0 < artifact.n_users * self.n_items <= top_lists_max_cells
                and artifact.n_users <= top_lists_max_users):
            self.top_lists = TopLists.rank(artifact.user_factors, artifact.item_factors,
                                           artifact.seen_indptr, artifact.seen_indices)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def recall(self) -> float:
        """Recall@10 of scored answers against exact scoring: the index's, or 1."""
        return self.index.recall if self.index else 1.0

    @property
    def scanned(self) -> float:
        """The share of the catalogue a scored query reads: the index's, or 1."""
        return self.index.scanned if self.index else 1.0

    @property
    def scored_per_query(self) -> int:
        """Rows a Recommend query multiplies: the catalogue, or the index's centroids and
        probed blocks."""
        if self.index is None:
            return self.n_items
        return self.index.n_blocks + self.index.probes * BLOCK

    def knows_item(self, item_id: str) -> bool:
        return item_id in self._item_index

    def recommend(self, user_id: str, *, k: int, exclude_seen: bool,
                  exclude_item_ids: Iterable[str] = (),
                  recent_item_ids: Sequence[str] = ()) -> tuple[Strategy, Ranked]:
        """Top-k items for one user (see `Query`)."""
        query = Query(user_id, k, exclude_seen, tuple(exclude_item_ids), recent_item_ids)
        return self.recommend_many([query])[0]

    def recommend_many(self, queries: Sequence[Query]) -> list[tuple[Strategy, Ranked]]:
        """Top-k items for each query, in order: from the top lists where they hold the
        answer, else scored."""
        listed = [self.listed(query) for query in queries]
        unlisted = [query for query, answer in zip(queries, listed, strict=True) if answer is None]
        scored = iter(self._scored(unlisted) if unlisted else ())
        return [answer or next(scored) for answer in listed]

    def listed(self, query: Query) -> tuple[Strategy, Ranked] | None:
        """The answer from the user's top list, if it holds one (about 10 µs)."""
        row = self._user_index.get(query.user_id)
        if self.top_lists is None or row is None or not query.exclude_seen:
            return None
        excluded = set(self._indices(query.exclude_item_ids))
        excluded.update(self._indices(query.recent_item_ids))
        picked = self.top_lists.pick(row, min(query.k, self.n_items), excluded)
        if picked is None:
            return None
        ids = self.item_ids
        return Strategy.PERSONALIZED, tuple((ids[item], score) for item, score in picked)

    def _scored(self, queries: Sequence[Query]) -> list[tuple[Strategy, Ranked]]:
        vectors, strategies, excluded = self._prepare(queries)
        k = min(max(q.k for q in queries), self.n_items)
        popular = [i for i, strategy in enumerate(strategies) if strategy is Strategy.POPULARITY]
        if self.index is None:
            values, rows = (t.numpy() for t in self._exact(vectors, excluded, popular, k))
        else:
            values, rows = self.index.search(vectors, k, banned=self._flat(excluded))
            # Scored exactly: the popularity fallback, and the rare query whose probed blocks
            # held fewer than k items it may be shown.
            short = np.flatnonzero(values[:, k - 1] == _NEG_INF)
            if popular or len(short):
                redo = sorted(set(popular) | set(short.tolist()))
                exact = self._exact(vectors[redo], [excluded[i] for i in redo],
                                    [j for j, i in enumerate(redo) if i in popular], k)
                values[redo], rows[redo] = (t.numpy() for t in exact)
        return [(strategy, self._ranked(row_values[: query.k], row_rows[: query.k]))
                for strategy, query, row_values, row_rows
                in zip(strategies, queries, values.tolist(), rows.tolist(), strict=True)]

    def _calibrated_index(self, target_recall: float) -> ItemIndex | None:
        """An index calibrated on a sample of the model's users, each query as Recommend's
        default (k=10, training items excluded)."""
        users = self._artifact.user_ids
        sample = np.random.default_rng(0).permutation(len(users))[:CALIBRATION_USERS]
        vectors, _, excluded = self._prepare([Query(str(users[i]), CALIBRATION_K)
                                              for i in sample])
        _, exact = self._exact(vectors, excluded, [], min(CALIBRATION_K, self.n_items))
        return ItemIndex.build(self._items, vectors, exact.numpy(),
                               target_recall=target_recall, banned=self._flat(excluded))

    def _prepare(self, queries: Sequence[Query]
                 ) -> tuple[torch.Tensor, list[Strategy], list[np.ndarray]]:
        """Each query's user vector (zeros for the popularity fallback), strategy and the
        catalogue rows it excludes."""
        vectors = np.zeros((len(queries), self._users.shape[1]), dtype=np.float32)
        strategies: list[Strategy] = []
        excluded: list[np.ndarray] = []
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
            rows = [np.asarray(self._indices(query.exclude_item_ids), dtype=np.int64)]
            if query.exclude_seen:
                rows.append(np.asarray(recent, dtype=np.int64))
                if row is not None:
                    rows.append(self._seen[self._seen_indptr[row] : self._seen_indptr[row + 1]])
            excluded.append(np.concatenate(rows))
        return torch.from_numpy(vectors), strategies, excluded

    def _exact(self, vectors: torch.Tensor, excluded: list[np.ndarray], popular: list[int],
               k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k over the whole catalogue; rows in `popular` rank by popularity."""
        scores = vectors @ self._items_t
        if popular:
            scores[popular] = self._popularity
        banned = self._flat(excluded)
        if banned is not None:
            scores.view(-1)[banned] = _NEG_INF
        return torch.topk(scores, k)

    def _flat(self, excluded: list[np.ndarray]) -> torch.Tensor | None:
        """Excluded rows as positions in the flattened (queries, items) scores."""
        n = self.n_items
        positions = [rows + i * n for i, rows in enumerate(excluded) if len(rows)]
        return torch.from_numpy(np.concatenate(positions)) if positions else None

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
