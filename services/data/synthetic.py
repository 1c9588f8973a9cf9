"""Synthetic interaction events with the structure real data has, at any scale.

- Latent factors: every user and item has a vector; a user picks, among a few candidates
  drawn by popularity, the one its vector likes best (with Gumbel noise), so the chosen item
  follows popularity x exp(affinity) and a factor model can learn the data back.
- Power-law item popularity (Zipf exponent `popularity_exponent`) and lognormal user
  activity (`activity_sigma`), so a few items and users carry most events.
- Timestamps strictly increase over `days` from `start`; ratings follow affinity.

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
from services.data.loaders import Interaction, parse_type

BLOCK_EVENTS = 8192

DEFAULT_TYPE_MIX = MappingProxyType({
    "view": 0.50, "click": 0.20, "add_to_cart": 0.08, "purchase": 0.04,
    "rating": 0.12, "like": 0.04, "share": 0.02,
})


@dataclass(frozen=True, kw_only=True)
class SyntheticSpec:
    users: int
    items: int
    events: int
    seed: int = 42
    factors: int = 16
    popularity_exponent: float = 1.0
    activity_sigma: float = 1.0
    candidates: int = 16
    start: datetime = datetime(2024, 1, 1, tzinfo=UTC)
    days: float = 90.0
    type_mix: Mapping[str, float] = field(default_factory=lambda: DEFAULT_TYPE_MIX)

    def __post_init__(self) -> None:
        for name in ("users", "items", "factors", "candidates"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.events < 0:
            raise ValueError("events must not be negative")
        if self.days <= 0 or self.events > self.days * 86400e9:
            raise ValueError("days must be > 0 and leave each event its own nanosecond")
        if not self.type_mix or any(w < 0 for w in self.type_mix.values()):
            raise ValueError("type_mix needs at least one non-negative weight")
        unknown = [n for n in self.type_mix if not parse_type(n)]
        if unknown:
            raise ValueError(f"unknown interaction type {unknown[0]!r} in type_mix")


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
        # Scaled so that a user-item dot product has a standard deviation of about 1.
        scale = spec.factors ** -0.25
        self.user_factors = (rng.standard_normal((spec.users, spec.factors)) * scale
                             ).astype(np.float32)
        self.item_factors = (rng.standard_normal((spec.items, spec.factors)) * scale
                             ).astype(np.float32)
        ranks = rng.permutation(spec.items) + 1.0  # which item is how popular: shuffled
        self._item_cdf = _cdf(ranks ** -spec.popularity_exponent)
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
        candidates = _draw(self._item_cdf, rng.random((n, spec.candidates)))
        scores = np.einsum("nk,nck->nc", self.user_factors[users],
                           self.item_factors[candidates])
        chosen = np.argmax(scores + rng.gumbel(size=scores.shape), axis=1)
        items = candidates[np.arange(n), chosen]
        types = self._types[_draw(self._type_cdf, rng.random(n))]
        values = np.full(n, np.nan)
        ratings = types == interaction_pb2.INTERACTION_TYPE_RATING
        stars = 3.0 + self.affinity(users, items) + rng.normal(0.0, 0.5, n)
        values[ratings] = np.clip(np.round(stars * 2) / 2, 0.5, 5.0)[ratings]
        purchases = types == interaction_pb2.INTERACTION_TYPE_PURCHASE
        values[purchases] = 1.0 + rng.poisson(0.3, n)[purchases]
        # Slot i of the span, jittered inside it: strictly increasing, one per nanosecond+.
        offsets = (np.arange(first, first + n) + rng.random(n)) * self._step_ns
        occurred = self._start_ns + offsets.astype(np.int64)
        return Block(first, users, items, types, values, occurred)

    def blocks(self) -> Iterator[Block]:
        for number in range(-(-self.spec.events // BLOCK_EVENTS)):
            yield self.block(number)

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
