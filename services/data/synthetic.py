"""Synthetic interaction events with the structure real data has, at any scale.

- Taste clusters: items belong to clusters (genres) of skewed sizes, about sqrt(items) / 2 of
  them unless `clusters` says otherwise, so a cluster stays a small share of a large catalogue.
  Each user has `favourite_clusters` favourites, drawn by (flattened) cluster popularity, with
  Dirichlet weights. An event picks one of them by weight, or any cluster by popularity for a
  share `explore` of events, then an item within that cluster.
- Latent factors: item vectors sit near their cluster's centroid, a user's near the mix of its
  favourites'. Within the cluster, the user picks among a few candidates drawn by popularity
  the one its vector likes best (with Gumbel noise): popularity x exp(affinity).
- Power-law item popularity (Zipf exponent `popularity_exponent`) and lognormal user
  activity (`activity_sigma`), so a few items and users carry most events.
- Timestamps strictly increase over `days` from `start`; ratings follow affinity.

Why clusters: when the candidates came from the whole catalogue, popularity (orders of
magnitude apart in a Zipf catalogue) swamped affinity (a factor of about e^2), and the best
ALS on the protocol split only equalled popularity. The cluster a user draws from is personal.
NDCG@10 on the protocol split, before -> after (ALS: implicit's, the best of 9 settings on
the test split; ours: services.trainer.model with TrainConfig defaults):

    users x items x events (Zipf)    popularity     ALS                ours
    1,000 x 1,000 x 50k              0.293 -> 0.159  0.284 -> 0.385    0.288 -> 0.385
    1,000 x 20,000 x 60k             0.257 -> 0.095  0.244 -> 0.262    0.256 -> 0.104
    5,000 x 5,000 x 150k (1.2)       0.357 -> 0.183  0.306 -> 0.379    0.357 -> 0.272
    20,000 x 10,000 x 100k           0.181 -> 0.091  0.110 -> 0.183    0.181 -> 0.090
    20,000 x 100,000 x 2M (0.8)      0.140 -> 0.035  0.124 -> 0.281    0.140 -> 0.031

Distinct items in 500 users' top-10s on the last: 392 -> 1,946 (ALS). Ours stays near
popularity on the sparse shapes because its default regularisation, scaled by every row's
count of columns, is too strong there: with regularization=0.002 it reaches 0.265, 0.174 and
0.234 on the 2nd, 4th and 5th (1,287 distinct items on the last).

Events come in fixed blocks, each from its own generator seeded by (seed, block number), so
the output depends only on the spec, never on how a consumer chunks it, and tens of millions
of events stream without being held in memory (the factors are the only state).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import NamedTuple

import numpy as np

from recsys.events.v1 import interaction_pb2
from recsys.events.v1.catalog_pb2 import Item
from services.data.loaders import Interaction, parse_type

BLOCK_EVENTS = 8192
# Weights of a vector's cluster centroid (a user's: its favourites') and of its own noise: items
# of a cluster look alike, with room for personal taste within it.
_CENTRE, _SPREAD = 0.9, 0.45
# Favourite clusters are drawn by cluster popularity to this power: by popularity itself most
# users would share the few clusters that hold the top items, and popularity would predict them.
_FAVOURITE_POWER = 0.5
# A rating is this plus the affinity plus noise: 3.6 stars on average.
_STARS_OFFSET = 1.5

DEFAULT_TYPE_MIX = MappingProxyType({
    "view": 0.50, "click": 0.20, "add_to_cart": 0.08, "purchase": 0.04,
    "rating": 0.12, "like": 0.04, "share": 0.02,
})


@dataclass(frozen=True, kw_only=True)
class SyntheticSpec:
    """What to generate. Tastes: `clusters` genres (0: about sqrt(items) / 2), each user with
    `favourite_clusters` favourites, and a share `explore` of events anywhere in the catalogue.
    """

    users: int
    items: int
    events: int
    seed: int = 42
    factors: int = 16
    popularity_exponent: float = 1.0
    activity_sigma: float = 1.0
    candidates: int = 16
    clusters: int = 0
    favourite_clusters: int = 3
    explore: float = 0.1
    start: datetime = datetime(2024, 1, 1, tzinfo=UTC)
    days: float = 90.0
    type_mix: Mapping[str, float] = field(default_factory=lambda: DEFAULT_TYPE_MIX)

    def __post_init__(self) -> None:
        for name in ("users", "items", "factors", "candidates", "favourite_clusters"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.clusters < 0:
            raise ValueError("clusters must not be negative (0: chosen from the catalogue size)")
        if not 0 <= self.explore <= 1:
            raise ValueError("explore must be between 0 and 1")
        if self.events < 0:
            raise ValueError("events must not be negative")
        if self.days <= 0 or self.events > self.days * 86400e9:
            raise ValueError("days must be > 0 and leave each event its own nanosecond")
        if not self.type_mix or any(w < 0 for w in self.type_mix.values()):
            raise ValueError("type_mix needs at least one non-negative weight")
        unknown = [n for n in self.type_mix if not parse_type(n)]
        if unknown:
            raise ValueError(f"unknown interaction type {unknown[0]!r} in type_mix")

    @property
    def cluster_count(self) -> int:
        """`clusters`, or by default about sqrt(items) / 2: more genres in a larger catalogue."""
        return self.clusters or max(1, round(math.sqrt(self.items) / 2))


class Block(NamedTuple):
    """Events [first, first + len) as columns; value is NaN where the event has none."""

    first: int
    user: np.ndarray
    item: np.ndarray
    type: np.ndarray
    value: np.ndarray
    occurred_ns: np.ndarray


class SyntheticData:
    def __init__(self, spec: SyntheticSpec) -> None:
        self.spec = spec
        rng = np.random.default_rng([spec.seed, 0])
        clusters, favourites = spec.cluster_count, spec.favourite_clusters
        # Scaled so that a user's affinity is about 2 to items of its favourite clusters and 0
        # to the rest (standard deviation about 1 for both, 0.5 within one cluster).
        scale = spec.factors ** -0.25
        centroids = rng.standard_normal((clusters, spec.factors)) * scale
        # Cluster sizes are skewed too: a few big genres, a long tail of niches.
        self.item_cluster = _draw(_cdf(rng.lognormal(0.0, 1.0, clusters)),
                                  rng.random(spec.items))
        self.item_factors = (centroids[self.item_cluster] * _CENTRE
                             + rng.standard_normal((spec.items, spec.factors)) * scale * _SPREAD
                             ).astype(np.float32)
        ranks = rng.permutation(spec.items) + 1.0  # which item is how popular: shuffled
        popularity = ranks ** -spec.popularity_exponent
        # Items sorted by cluster, with the cumulative popularity along that order: an item of
        # cluster c is drawn by searching a uniform point of c's stretch of it. An empty cluster
        # has no mass, so it is never drawn.
        self._by_cluster = np.argsort(self.item_cluster, kind="stable")
        self._cumulative = np.cumsum(popularity[self._by_cluster])
        bounds = np.searchsorted(self.item_cluster[self._by_cluster], np.arange(clusters + 1))
        self._first, self._last = bounds[:-1], np.maximum(bounds[1:] - 1, bounds[:-1])
        below = np.concatenate(([0.0], self._cumulative))
        self._base, self._mass = below[bounds[:-1]], below[bounds[1:]] - below[bounds[:-1]]
        self._cluster_cdf = _cdf(self._mass)
        # Each user's favourite clusters (a cluster can come twice) with Dirichlet weights; its
        # vector mixes their centroids, most of the one it likes most.
        self.favourites = _draw(_cdf(self._mass ** _FAVOURITE_POWER),
                                rng.random((spec.users, favourites))).astype(np.int32)
        weights = rng.gamma(1.0, 1.0, (spec.users, favourites))
        self._favourite_cdf = np.cumsum(weights / weights.sum(1, keepdims=True), axis=1)
        weights /= np.linalg.norm(weights, axis=1, keepdims=True)
        tastes = sum(weights[:, [j]] * centroids[self.favourites[:, j]]
                     for j in range(favourites))
        self.user_factors = (tastes * _CENTRE
                             + rng.standard_normal((spec.users, spec.factors)) * scale * _SPREAD
                             ).astype(np.float32)
        self._user_cdf = _cdf(rng.lognormal(0.0, spec.activity_sigma, spec.users))
        self._types = np.array([parse_type(name) for name in spec.type_mix], dtype=np.int32)
        self._type_cdf = _cdf(np.array(list(spec.type_mix.values()), dtype=np.float64))
        self._start_ns = int(spec.start.timestamp()) * 1_000_000_000
        self._step_ns = spec.days * 86400e9 / max(spec.events, 1)

    def affinity(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """The latent score of each (user, item) pair."""
        return np.einsum("nk,nk->n", self.user_factors[users], self.item_factors[items])

    def block(self, number: int) -> Block:
        spec = self.spec
        first = number * BLOCK_EVENTS
        n = min(BLOCK_EVENTS, spec.events - first)
        rng = np.random.default_rng([spec.seed, 1, number])
        users = _draw(self._user_cdf, rng.random(n))
        clusters = self._clusters(users, rng)
        candidates = self._in_clusters(clusters, rng.random((n, spec.candidates)))
        scores = np.einsum("nk,nck->nc", self.user_factors[users],
                           self.item_factors[candidates])
        chosen = np.argmax(scores + rng.gumbel(size=scores.shape), axis=1)
        items = candidates[np.arange(n), chosen]
        types = self._types[_draw(self._type_cdf, rng.random(n))]
        values = np.full(n, np.nan)
        ratings = types == interaction_pb2.INTERACTION_TYPE_RATING
        stars = _STARS_OFFSET + self.affinity(users, items) + rng.normal(0.0, 0.5, n)
        values[ratings] = np.clip(np.round(stars * 2) / 2, 0.5, 5.0)[ratings]
        purchases = types == interaction_pb2.INTERACTION_TYPE_PURCHASE
        values[purchases] = 1.0 + rng.poisson(0.3, n)[purchases]
        # Slot i of the span, jittered inside it: strictly increasing, one per nanosecond+.
        offsets = (np.arange(first, first + n) + rng.random(n)) * self._step_ns
        occurred = self._start_ns + offsets.astype(np.int64)
        return Block(first, users, items, types, values, occurred)

    def _clusters(self, users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One of each user's favourite clusters by its weight, or any cluster by popularity
        for a share `explore` of events."""
        pick = (rng.random(len(users))[:, None] > self._favourite_cdf[users]).sum(1)
        favourite = self.favourites[users, np.minimum(pick, self.spec.favourite_clusters - 1)]
        anywhere = _draw(self._cluster_cdf, rng.random(len(users)))
        return np.where(rng.random(len(users)) < self.spec.explore, anywhere, favourite)

    def _in_clusters(self, clusters: np.ndarray, uniform: np.ndarray) -> np.ndarray:
        """Items drawn by popularity within each row's cluster, one per uniform number."""
        points = self._base[clusters, None] + uniform * self._mass[clusters, None]
        positions = np.searchsorted(self._cumulative, points, side="right")
        positions = np.clip(positions, self._first[clusters, None], self._last[clusters, None])
        return self._by_cluster[positions]

    def blocks(self) -> Iterator[Block]:
        for number in range(-(-self.spec.events // BLOCK_EVENTS)):
            yield self.block(number)

    def items(self) -> Iterator[Item]:
        """The catalogue: each item `i<n>` in its taste cluster's category `genre-<c>`."""
        for item, cluster in enumerate(self.item_cluster.tolist()):
            yield Item(item_id=f"i{item}", categories=[f"genre-{cluster}"])

    def events(self) -> Iterator[Interaction]:
        """Every event in order, ids `syn-<seed>-<index>` so a reload is idempotent."""
        prefix = f"syn-{self.spec.seed}-"
        for block in self.blocks():
            columns = zip(block.user.tolist(), block.item.tolist(), block.type.tolist(),
                          block.value.tolist(), block.occurred_ns.tolist(), strict=True)
            for index, (user, item, kind, value, occurred) in enumerate(columns, block.first):
                event = Interaction(event_id=f"{prefix}{index}", user_id=f"u{user}",
                                    item_id=f"i{item}", type=kind)
                if not math.isnan(value):
                    event.value = value
                event.occurred_at.seconds, event.occurred_at.nanos = divmod(
                    occurred, 1_000_000_000)
                yield event


def _cdf(weights: np.ndarray) -> np.ndarray:
    cumulative = np.cumsum(weights, dtype=np.float64)
    return cumulative / cumulative[-1]


def _draw(cdf: np.ndarray, uniform: np.ndarray) -> np.ndarray:
    """Indexes drawn with probabilities given by `cdf`, one per uniform number."""
    return np.minimum(np.searchsorted(cdf, uniform, side="right"), len(cdf) - 1)
