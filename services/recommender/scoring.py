"""Ranking with one model version: vectorised torch over the catalogue, then top-k.

A `Scorer` is built once per loaded version and never changes, so any number of requests (and
worker threads) read it at the same time without locks. Recommend queries are scored in
batches: one matrix product and one top-k serve every query of a batch, so concurrent requests
share the pass over the item factors (the cost that dominates large catalogues) and the fixed
cost of each torch call (the one that dominates small ones). A large catalogue is searched
through an `ItemIndex` instead, when one calibrated on the version's own users reaches the
target recall; popularity answers and queries the index cannot fill are still scored exactly.

What the catalogue says (services.recommender.catalog_state) reaches scoring through each
query's `ItemFilter` and two facts about its user: blocked items (hidden, deleted, unavailable)
are never returned, a category filter scores only the items in the categories, items the model
does not know yet are scored with vectors made for them and merged in, an erased user is
answered as one the model does not know, and a user without history but with labels gets the
popularity among the users who share them.
"""

from __future__ import annotations

import enum
import heapq
import itertools
from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass, field

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
# A category filter's product small enough to compute rather than fetch: up to this many
# factor cells (rows x factors) take about 100 us here, less than a Redis lookup and write.
DIRECT_MAX_CELLS = 1 << 17


class Strategy(enum.Enum):
    PERSONALIZED = "personalized"  # the user's trained vector
    FOLD_IN = "fold_in"  # an unknown user, solved from their recent interactions
    POPULARITY = "popularity"  # nothing known about the user
    LABEL_POPULARITY = "label_popularity"  # an unknown user with labels: what their peers like


_POPULAR = (Strategy.POPULARITY, Strategy.LABEL_POPULARITY)


@dataclass(frozen=True, eq=False)
class ItemFilter:
    """Which items a query may return, as the catalogue says (built by
    services.recommender.catalog_state, one per catalogue state and category filter)."""

    blocked: Set[int]  # model rows never returned: hidden, deleted or unavailable items
    blocked_rows: np.ndarray  # the same rows, int64
    only: np.ndarray | None = None  # sorted model rows to choose among (categories); None: any
    extra_ids: tuple[str, ...] = ()  # items the model does not know that may be returned,
    extra_vectors: np.ndarray = field(  # with their vectors (len(extra_ids), factors)
        default_factory=lambda: np.empty((0, 0), np.float32))


NO_FILTER = ItemFilter(frozenset(), np.empty(0, np.int64))


@dataclass(frozen=True, eq=False)
class Query:
    """One user's Recommend request as scoring sees it. `recent_item_ids` (newest first) are
    interactions since training: excluded with the training items when `exclude_seen`, and
    used to fold in a user the model does not know. `anonymous` answers the user as one the
    model does not know (an erased user); `popularity` (one float per model item), when the
    user is unknown and has no recent interactions, replaces the model's popularity."""

    user_id: str
    k: int
    exclude_seen: bool = True
    exclude_item_ids: Sequence[str] = ()
    recent_item_ids: Sequence[str] = ()
    items: ItemFilter = NO_FILTER
    anonymous: bool = False
    popularity: np.ndarray | None = None


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

    def item_row(self, item_id: str) -> int | None:
        return self._item_index.get(item_id)

    def user_row(self, user_id: str) -> int | None:
        return self._user_index.get(user_id)

    def item_vectors(self, rows: np.ndarray) -> np.ndarray:
        """The factors of the items at `rows`."""
        return self._artifact.item_factors[rows]

    def popularity_among(self, users: np.ndarray) -> np.ndarray:
        """Per item, how many of `users` (model rows) it had in training: float32."""
        indptr = self._artifact.seen_indptr
        starts, lengths = indptr[users], indptr[users + 1] - indptr[users]
        first = np.cumsum(lengths) - lengths  # where each user's items start, concatenated
        positions = np.repeat(starts - first, lengths) + np.arange(lengths.sum())
        return np.bincount(self._seen[positions], minlength=self.n_items).astype(np.float32)

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
        row = None if query.anonymous else self._user_index.get(query.user_id)
        if (self.top_lists is None or row is None or not query.exclude_seen
                or query.items.only is not None):
            return None
        index = self._item_index
        excluded = {index[item] for item in itertools.chain(
            query.exclude_item_ids, query.recent_item_ids) if item in index}
        picked = self.top_lists.pick(row, min(query.k, self.n_items), excluded,
                                     query.items.blocked)
        if picked is None:
            return None
        ids = self.item_ids
        ranked = tuple([(ids[item], score) for item, score in picked])
        return Strategy.PERSONALIZED, self._with_extras(query, self._users[row], ranked)

    def direct(self, query: Query) -> tuple[Strategy, Ranked] | None:
        """The answer when computing it costs no more than fetching it from a cache: a known
        user's top list (`listed`), or a known user's exact product over a category filter's
        rows when they hold at most `DIRECT_MAX_CELLS` factors; None otherwise."""
        only = query.items.only
        if only is None:
            return self.listed(query)
        if (query.anonymous or query.user_id not in self._user_index
                or len(only) * self._users.shape[1] > DIRECT_MAX_CELLS):
            return None
        return self._scored_among([query], only)[0]

    def _scored(self, queries: Sequence[Query]) -> list[tuple[Strategy, Ranked]]:
        """Queries scored over the catalogue, or over the rows their filter allows (queries
        that share a filter's rows share one product)."""
        groups: dict[int, list[int]] = {}
        for n, query in enumerate(queries):
            groups.setdefault(id(query.items.only), []).append(n)
        answers: dict[int, tuple[Strategy, Ranked]] = {}
        for positions in groups.values():
            group = [queries[n] for n in positions]
            only = group[0].items.only
            scored = self._scored_all(group) if only is None else self._scored_among(group, only)
            answers.update(zip(positions, scored, strict=True))
        return [answers[n] for n in range(len(queries))]

    def _scored_all(self, queries: Sequence[Query]) -> list[tuple[Strategy, Ranked]]:
        vectors, strategies, excluded = self._prepare(queries)
        k = min(max(q.k for q in queries), self.n_items)
        popular = self._popular(queries, strategies)
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
                                    {j: popular[i] for j, i in enumerate(redo) if i in popular},
                                    k)
                values[redo], rows[redo] = (t.numpy() for t in exact)
        return self._answers(queries, vectors, strategies, values.tolist(), rows.tolist())

    def _scored_among(self, queries: Sequence[Query], only: np.ndarray
                      ) -> list[tuple[Strategy, Ranked]]:
        """Top-k of the catalogue rows `only` (sorted), exactly: a category filter's. In
        numpy: for the few rows of a category, torch's per-call overhead would dominate."""
        vectors, strategies, excluded = self._prepare(queries)
        k = min(max(q.k for q in queries), len(only))
        if not k:
            return self._answers(queries, vectors, strategies, [[]] * len(queries),
                                 [[]] * len(queries))
        # The category's rows gathered (contiguous), then one tall product: the fastest
        # layout here, and the one multi-threaded BLAS does not slow down.
        scores = (np.take(self._artifact.item_factors, only, axis=0) @ vectors.numpy().T).T
        popular = self._popular(queries, strategies)
        values: list[list[float]] = []
        rows: list[list[int]] = []
        last = len(only) - 1
        for i, row_excluded in enumerate(excluded):
            row_scores = popular[i].numpy()[only] if i in popular else scores[i]
            found = np.minimum(np.searchsorted(only, row_excluded), last)
            row_scores[found[only[found] == row_excluded]] = _NEG_INF  # excluded, if among
            best = np.argpartition(-row_scores, k - 1)[:k]
            best = best[np.argsort(-row_scores[best], kind="stable")]
            values.append(row_scores[best].tolist())
            rows.append(only[best].tolist())
        return self._answers(queries, vectors, strategies, values, rows)

    def _answers(self, queries: Sequence[Query], vectors: torch.Tensor,
                 strategies: list[Strategy], values: list[list[float]],
                 rows: list[list[int]]) -> list[tuple[Strategy, Ranked]]:
        """Each query's ranked answer, with its filter's extra items merged in."""
        return [(strategy, self._with_extras(
                    query, vector, self._ranked(row_values[: query.k], row_rows[: query.k]),
                    strategy))
                for strategy, query, vector, row_values, row_rows
                in zip(strategies, queries, vectors.numpy(), values, rows, strict=True)]

    def _popular(self, queries: Sequence[Query], strategies: list[Strategy]
                 ) -> dict[int, torch.Tensor]:
        """The popularity each popularity-fallback query ranks by, by its position."""
        return {i: self._popularity if query.popularity is None
                else torch.from_numpy(query.popularity)
                for i, (query, strategy) in enumerate(zip(queries, strategies, strict=True))
                if strategy in _POPULAR}

    def _with_extras(self, query: Query, vector: np.ndarray, ranked: Ranked,
                     strategy: Strategy = Strategy.PERSONALIZED) -> Ranked:
        """`ranked` with the query's extra items (the model does not know them) merged in by
        their scores against `vector`; popularity answers have none (no one had them)."""
        items = query.items
        if not items.extra_ids or strategy in _POPULAR:
            return ranked
        return _merged(ranked, _extra_scores(items, items.extra_vectors @ vector, query),
                       query.k)

    def _calibrated_index(self, target_recall: float) -> ItemIndex | None:
        """An index calibrated on a sample of the model's users, each query as Recommend's
        default (k=10, training items excluded)."""
        users = self._artifact.user_ids
        sample = np.random.default_rng(0).permutation(len(users))[:CALIBRATION_USERS]
        vectors, _, excluded = self._prepare([Query(str(users[i]), CALIBRATION_K)
                                              for i in sample])
        _, exact = self._exact(vectors, excluded, {}, min(CALIBRATION_K, self.n_items))
        return ItemIndex.build(self._items, vectors, exact.numpy(),
                               target_recall=target_recall, banned=self._flat(excluded))

    def _prepare(self, queries: Sequence[Query]
                 ) -> tuple[torch.Tensor, list[Strategy], list[np.ndarray]]:
        """Each query's user vector (zeros for the popularity fallbacks), strategy and the
        catalogue rows it excludes (its filter's blocked rows among them)."""
        vectors = np.zeros((len(queries), self._users.shape[1]), dtype=np.float32)
        strategies: list[Strategy] = []
        excluded: list[np.ndarray] = []
        for i, query in enumerate(queries):
            recent = self._indices(query.recent_item_ids)
            row = None if query.anonymous else self._user_index.get(query.user_id)
            if row is not None:
                strategies.append(Strategy.PERSONALIZED)
                vectors[i] = self._users[row]
            elif recent:
                strategies.append(Strategy.FOLD_IN)
                vectors[i] = self._artifact.fold_in(np.asarray(recent))
            elif query.popularity is not None:
                strategies.append(Strategy.LABEL_POPULARITY)
            else:
                strategies.append(Strategy.POPULARITY)
            rows = [np.asarray(self._indices(query.exclude_item_ids), dtype=np.int64),
                    query.items.blocked_rows]
            if query.exclude_seen:
                rows.append(np.asarray(recent, dtype=np.int64))
                if row is not None:
                    rows.append(self._seen[self._seen_indptr[row] : self._seen_indptr[row + 1]])
            excluded.append(np.concatenate(rows))
        return torch.from_numpy(vectors), strategies, excluded

    def _exact(self, vectors: torch.Tensor, excluded: list[np.ndarray],
               popular: Mapping[int, torch.Tensor], k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k over the whole catalogue; the rows in `popular` rank by the popularity it
        gives them."""
        scores = vectors @ self._items_t
        for i, popularity in popular.items():
            scores[i] = popularity
        banned = self._flat(excluded)
        if banned is not None:
            scores.view(-1)[banned] = _NEG_INF
        return torch.topk(scores, k)

    def _flat(self, excluded: list[np.ndarray]) -> torch.Tensor | None:
        """Excluded rows as positions in the flattened (queries, items) scores."""
        n = self.n_items
        positions = [rows + i * n for i, rows in enumerate(excluded) if len(rows)]
        return torch.from_numpy(np.concatenate(positions)) if positions else None

    def similar(self, item_id: str, *, k: int, items: ItemFilter = NO_FILTER,
                vector: np.ndarray | None = None) -> Ranked:
        """The k items with the highest cosine similarity to `item_id` (itself left out) that
        `items` allows; `vector` stands for an item the model does not know."""
        row = self._item_index.get(item_id)
        if row is None and vector is None:
            raise NotFound(f"item {item_id!r} is not in the model")
        anchor = self._items[row] if row is not None else torch.from_numpy(vector)
        norm = anchor.norm().clamp_min(1e-12)
        if items.only is None:
            scores = (anchor @ self._items_t) / (self._norms * norm)
            scores[torch.from_numpy(items.blocked_rows)] = _NEG_INF
            if row is not None:
                scores[row] = _NEG_INF
            values, rows = torch.topk(scores, min(k, len(scores)))
            ranked = self._ranked(values.tolist(), rows.tolist())
        else:
            among = torch.from_numpy(items.only)
            scores = ((anchor @ self._items_t.index_select(1, among))
                      / (self._norms[among] * norm))
            if row is not None:
                scores[among == row] = _NEG_INF
            values, places = torch.topk(scores, min(k, len(scores)))
            ranked = self._ranked(values.tolist(), items.only[places.numpy()].tolist())
        if not items.extra_ids:
            return ranked
        extras = items.extra_vectors
        cosine = (extras @ anchor.numpy()) / (np.linalg.norm(extras, axis=1).clip(1e-12)
                                               * float(norm))
        return _merged(ranked, _extra_scores(items, cosine, Query(item_id, k,
                                                                  exclude_item_ids=[item_id])), k)

    def _indices(self, item_ids: Iterable[str]) -> list[int]:
        """Catalogue rows of the known ids among `item_ids` (unknown ones are ignored)."""
        index = self._item_index
        return [index[item] for item in item_ids if item in index]

    def _ranked(self, values: list[float], rows: list[int]) -> Ranked:
        """(id, score) pairs of the top rows, without the excluded (-inf) ones."""
        ids = self.item_ids
        return tuple((ids[row], value) for row, value in zip(rows, values, strict=True)
                     if value != _NEG_INF)


def _extra_scores(items: ItemFilter, scores: np.ndarray, query: Query) -> Ranked:
    """The best `query.k` of a filter's extra items by `scores`, without those the query
    excludes (its exclude list, and its recent items when it excludes what was seen)."""
    excluded = set(query.exclude_item_ids)
    if query.exclude_seen:
        excluded.update(query.recent_item_ids)
    order = np.argsort(-scores, kind="stable")[: query.k + len(excluded)]
    ids = items.extra_ids
    return tuple((ids[n], float(scores[n])) for n in order.tolist()
                 if ids[n] not in excluded)[: query.k]


def _merged(first: Ranked, second: Ranked, k: int) -> Ranked:
    """The best k of two rankings."""
    return tuple(heapq.merge(first, second, key=lambda pair: -pair[1]))[:k]
