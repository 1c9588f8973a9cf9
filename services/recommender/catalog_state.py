"""What the catalogue means for one served model version: a `CatalogState` per version and
catalogue position, kept up to date by a `StateBuilder` as the catalogue changes.

A state tells a request which model rows it may never return (hidden, deleted, or outside
their availability window), which rows each category holds, which catalogue items the model
does not know and the vectors they are scored with (cold start), which users were erased after
the version was trained (answered as users it does not know), and what users who share labels
liked. It never changes once published (what it computes on demand, per category filter or
label set, it keeps in bounded caches), so requests read it without locks; `version` names it
in cache keys, so an answer cached under one state is never served under another.

Cold start: an item the model does not know gets the mean of the centroids of its tags (its
categories and its labels) over the model's items that carry them, scaled to the typical norm
of those items, so it ranks like an item of its kind for the users who like that kind.

The builder changes only what a batch of catalogue changes touched: a hide costs the item's
own rows and categories, not a pass over the catalogue.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from recsys.events.v1.catalog_pb2 import Item, User
from services.core.catalog import CatalogView, Changes, available, window_bounds
from services.recommender.model_store import LoadedModel
from services.recommender.scoring import ItemFilter, Scorer

# Per-filter and per-label-set answers a state keeps, at most.
_CACHED = 256

Tag = tuple[str, str]  # ("category" or "label", name)


def categories_tag(categories: Iterable[str]) -> str:
    """Names a category filter (any order) in cache keys: "-" for none, else a short hash."""
    names = sorted(set(categories))
    if not names:
        return "-"
    return hashlib.blake2b("\x1f".join(names).encode(), digest_size=8).hexdigest()


class _Facts(NamedTuple):
    """What the builder last made of one catalogue item."""

    row: int | None  # in the model, if it knows the item
    categories: frozenset[str]
    tags: frozenset[Tag]
    blocked: bool  # hidden, deleted or outside its window
    bounds: tuple[float, ...]  # when its availability changes by itself


@dataclass(frozen=True, eq=False)
class CatalogState:
    """The catalogue for one model version, at one position of the topic."""

    scorer: Scorer
    version: str
    items: int  # in the catalogue, deleted ones not counted
    blocked_items: int  # of those, never recommended now
    unfiltered: ItemFilter
    categories: Mapping[str, np.ndarray]  # category → model rows, sorted, blocked ones left out
    cold_ids: tuple[str, ...]
    cold_vectors: np.ndarray
    cold_categories: Mapping[str, np.ndarray]  # category → positions in cold_ids
    label_users: Mapping[str, np.ndarray]  # user label → model user rows
    forgotten: frozenset[str]  # erased after the version was trained
    users: Mapping[str, User]  # the view's profiles (each entry replaced whole)
    _filters: dict[frozenset[str], ItemFilter] = field(default_factory=dict)
    _popularity: dict[frozenset[str], np.ndarray | None] = field(default_factory=dict)

    @property
    def cold_index(self) -> Mapping[str, int]:
        return {item_id: n for n, item_id in enumerate(self.cold_ids)}

    def items_for(self, categories: Sequence[str]) -> ItemFilter:
        """What a query filtered by `categories` (any of them; none: no filter) may return."""
        if not categories:
            return self.unfiltered
        key = frozenset(categories)
        found = self._filters.get(key)
        if found is None:
            found = self._filters[key] = self._filter(key)
            if len(self._filters) > _CACHED:
                self._filters.pop(next(iter(self._filters)))
        return found

    def _filter(self, categories: frozenset[str]) -> ItemFilter:
        empty = np.empty(0, np.int64)
        only = _union(self.categories.get(c, empty) for c in categories)
        cold = _union(self.cold_categories.get(c, empty) for c in categories)
        return ItemFilter(self.unfiltered.blocked, self.unfiltered.blocked_rows, only,
                          tuple(self.cold_ids[n] for n in cold.tolist()),
                          self.cold_vectors[cold])

    def popularity_for(self, user_id: str) -> np.ndarray | None:
        """The popularity among the model's users who share a label with `user_id`, or None
        when the user has no labels or no one shares them."""
        user = self.users.get(user_id)
        if user is None or not user.labels:
            return None
        key = frozenset(user.labels)
        if key not in self._popularity:
            empty = np.empty(0, np.int64)
            peers = _union(self.label_users.get(label, empty) for label in key)
            self._popularity[key] = self.scorer.popularity_among(peers) if len(peers) else None
            if len(self._popularity) > _CACHED:
                self._popularity.pop(next(iter(self._popularity)))
        return self._popularity[key]

    def cold_vector(self, item_id: str) -> np.ndarray | None:
        """The vector of an item the model does not know, if the catalogue places it."""
        position = self.cold_index.get(item_id)
        return None if position is None else self.cold_vectors[position]


def _union(arrays: Iterable[np.ndarray]) -> np.ndarray:
    parts = [a for a in arrays if len(a)]
    if not parts:
        return np.empty(0, np.int64)
    return parts[0] if len(parts) == 1 else np.unique(np.concatenate(parts))


class StateBuilder:
    """Keeps a model version's view of the catalogue and publishes `CatalogState`s of it.

    Used by one thread at a time. `update` takes what a batch of records changed, `advance`
    what the passing of time changed (availability windows), `publish` makes a state. The view
    may move on meanwhile (its consumer thread writes it): a state is named by the view version
    its changes came with, read before its data, so newer data may sit under an older name,
    never older data under a newer one.
    """

    def __init__(self, model: LoadedModel, view: CatalogView, *, view_version: str,
                 now_s: float) -> None:
        self._model = model
        self._scorer = model.scorer
        self._view = view
        self._view_version = view_version
        self._now_s = now_s
        self._facts: dict[str, _Facts] = {}
        self._blocked_rows: set[int] = set()
        self._blocked_items: set[str] = set()
        self._members: dict[str, set[int]] = {}  # category → model rows
        self._tagged: dict[Tag, set[int]] = {}  # tag → model rows
        self._centroids: dict[Tag, tuple[np.ndarray, float] | None] = {}
        self._cold: dict[str, np.ndarray] = {}  # item → vector
        self._cold_by_tag: dict[Tag, set[str]] = {}
        self._windowed: dict[str, tuple[float, ...]] = {}
        self._label_users: dict[str, set[int]] = {}
        self._user_labels: dict[str, frozenset[str]] = {}
        self._forgotten: set[str] = set()
        self._published: CatalogState | None = None
        self._touched_tags: set[Tag] = set()
        self._stale_cold: set[str] = set()
        self._dirty_categories: set[str] = set()
        self._dirty_labels: set[str] = set()
        self._dirty_cold = True
        self._dirty_blocked = True
        self.update(Changes(frozenset([*view.items, *view.deleted]),
                            frozenset([*view.users, *view.erasures])), view_version)

    @property
    def model(self) -> LoadedModel:
        return self._model

    def update(self, changes: Changes, view_version: str) -> None:
        """Take in what a batch of records changed, applied to the view at `view_version`."""
        self._view_version = view_version
        for item_id in changes.items:
            self._item(item_id)
        self._refresh_cold()
        for user_id in changes.users:
            self._user(user_id)

    def advance(self, now_s: float) -> bool:
        """Move the clock to `now_s`; whether an availability window opened or closed."""
        self._now_s = now_s
        flipped = [item_id for item_id in self._windowed if self._flipped(item_id)]
        for item_id in flipped:
            self._item(item_id)
        self._refresh_cold()
        return bool(flipped)

    def _flipped(self, item_id: str) -> bool:
        """Whether an item's availability now differs from what its facts say."""
        item = self._view.items.get(item_id)
        return item is not None and self._facts[item_id].blocked == available(item, self._now_s)

    def next_change_s(self) -> float | None:
        """The next instant at which a window opens or closes, if any."""
        later = [b for bounds in self._windowed.values() for b in bounds if b > self._now_s]
        return min(later, default=None)

    def publish(self) -> CatalogState:
        """The state of the catalogue now, sharing what did not change with the last one."""
        previous = self._published
        categories = dict(previous.categories) if previous else {}
        for category in self._dirty_categories:
            rows = self._members.get(category, set()) - self._blocked_rows
            if rows:
                categories[category] = np.array(sorted(rows), np.int64)
            else:
                categories.pop(category, None)
        label_users = dict(previous.label_users) if previous else {}
        for label in self._dirty_labels:
            users = self._label_users.get(label)
            if users:
                label_users[label] = np.array(sorted(users), np.int64)
            else:
                label_users.pop(label, None)
        cold_categories: Mapping[str, np.ndarray]
        if self._dirty_cold or previous is None:
            cold_ids = tuple(sorted(self._cold))
            factors = self._scorer.item_vectors(np.empty(0, np.int64)).shape[1]
            cold_vectors = (np.stack([self._cold[i] for i in cold_ids]) if cold_ids
                            else np.empty((0, factors), np.float32))
            cold_categories = _positions(cold_ids, self._facts)
        else:
            cold_ids, cold_vectors = previous.cold_ids, previous.cold_vectors
            cold_categories = previous.cold_categories
        blocked: Set[int]
        if self._dirty_blocked or previous is None:
            blocked = frozenset(self._blocked_rows)
            blocked_rows = np.array(sorted(blocked), np.int64)
        else:
            blocked, blocked_rows = previous.unfiltered.blocked, previous.unfiltered.blocked_rows
        state = CatalogState(
            scorer=self._scorer, version=self._version(), items=len(self._view.items),
            blocked_items=len(self._blocked_items),
            unfiltered=ItemFilter(blocked, blocked_rows, None, cold_ids, cold_vectors),
            categories=categories, cold_ids=cold_ids, cold_vectors=cold_vectors,
            cold_categories=cold_categories, label_users=label_users,
            forgotten=frozenset(self._forgotten), users=self._view.users)
        self._published = state
        self._dirty_categories.clear()
        self._dirty_labels.clear()
        self._dirty_cold = self._dirty_blocked = False
        return state

    def _version(self) -> str:
        """The view's position and the last window bound passed: the same on every replica
        that has read as far (at the same time)."""
        passed = [b for bounds in self._windowed.values() for b in bounds if b <= self._now_s]
        return f"{self._view_version}@{max(passed, default=0):.3f}"

    # -- items -----------------------------------------------------------------------------

    def _item(self, item_id: str) -> None:
        """Bring one item's facts, and everything derived from them, up to date."""
        before = self._facts.pop(item_id, None)
        if before is not None:
            self._forget(item_id, before)
        item = self._view.items.get(item_id)
        after = None
        if item is not None or item_id in self._view.deleted:
            after = self._facts_of(item_id, item)
            self._facts[item_id] = after
            self._remember(item_id, after)
        row = after.row if after is not None else before.row if before is not None else None
        if row is not None:  # a model item's tags place the new items that share them
            old = before.tags if before is not None else frozenset()
            new = after.tags if after is not None else frozenset()
            for tag in old - new:
                self._tagged[tag].discard(row)
            for tag in new - old:
                self._tagged.setdefault(tag, set()).add(row)
            self._touched_tags |= old ^ new

    def _facts_of(self, item_id: str, item: Item | None) -> _Facts:
        row = self._scorer.item_row(item_id)
        if item is None:  # deleted
            return _Facts(row, frozenset(), frozenset(), True, ())
        categories = frozenset(item.categories)
        tags = frozenset([*(("category", c) for c in categories),
                          *(("label", label) for label in item.labels)])
        return _Facts(row, categories, tags, not available(item, self._now_s),
                      window_bounds(item))

    def _remember(self, item_id: str, facts: _Facts) -> None:
        if facts.bounds:
            self._windowed[item_id] = facts.bounds
        if facts.blocked and item_id in self._view.items:
            self._blocked_items.add(item_id)
        self._dirty_categories |= facts.categories
        if facts.row is not None:
            if facts.blocked:
                self._blocked_rows.add(facts.row)
                self._dirty_blocked = True
            for category in facts.categories:
                self._members.setdefault(category, set()).add(facts.row)
        elif not facts.blocked:
            for tag in facts.tags:
                self._cold_by_tag.setdefault(tag, set()).add(item_id)
            self._stale_cold.add(item_id)

    def _forget(self, item_id: str, facts: _Facts) -> None:
        self._windowed.pop(item_id, None)
        self._blocked_items.discard(item_id)
        self._dirty_categories |= facts.categories
        if facts.row is not None:
            if facts.blocked:
                self._blocked_rows.discard(facts.row)
                self._dirty_blocked = True
            for category in facts.categories:
                self._members[category].discard(facts.row)
        elif not facts.blocked:
            for tag in facts.tags:
                self._cold_by_tag[tag].discard(item_id)
            self._stale_cold.discard(item_id)
            if self._cold.pop(item_id, None) is not None:
                self._dirty_cold = True

    def _refresh_cold(self) -> None:
        """Remake the vectors of the new items whose tags changed or whose tags' model items
        changed: after a whole batch, so each centroid is computed once, complete."""
        for tag in self._touched_tags:
            self._centroids.pop(tag, None)
            self._stale_cold |= self._cold_by_tag.get(tag, set())
        self._touched_tags.clear()
        for item_id in self._stale_cold:
            self._cold_vector(item_id)
        self._stale_cold.clear()

    def _cold_vector(self, item_id: str) -> None:
        """(Re)make the vector of an item the model does not know, from its tags' centroids;
        without any (no tag shared with a model item) it cannot be scored, so is left out."""
        facts = self._facts[item_id]
        found = [c for tag in facts.tags if (c := self._centroid(tag)) is not None]
        self._dirty_cold = True
        if not found:
            self._cold.pop(item_id, None)
            return
        direction = np.mean([vector for vector, _ in found], axis=0)
        length = float(np.linalg.norm(direction))
        scale = np.mean([norm for _, norm in found]) / length if length > 0 else 0.0
        self._cold[item_id] = (direction * scale).astype(np.float32)

    def _centroid(self, tag: Tag) -> tuple[np.ndarray, float] | None:
        """The mean vector of the model's items with `tag` and their mean norm."""
        if tag not in self._centroids:
            rows = self._tagged.get(tag)
            if not rows:
                self._centroids[tag] = None
            else:
                vectors = self._scorer.item_vectors(np.fromiter(rows, np.int64))
                self._centroids[tag] = (vectors.mean(axis=0),
                                        float(np.linalg.norm(vectors, axis=1).mean()))
        return self._centroids[tag]

    # -- users -----------------------------------------------------------------------------

    def _user(self, user_id: str) -> None:
        row = self._scorer.user_row(user_id)
        if row is not None:
            for label in self._user_labels.pop(user_id, frozenset()):
                self._label_users[label].discard(row)
                self._dirty_labels.add(label)
            user = self._view.users.get(user_id)
            labels = frozenset(user.labels) if user is not None else frozenset()
            if labels:
                self._user_labels[user_id] = labels
            for label in labels:
                self._label_users.setdefault(label, set()).add(row)
                self._dirty_labels.add(label)
        erasure = self._view.erasures.get(user_id)
        lineage = self._model.lineage
        if erasure is not None and (lineage is None or lineage.catalog_offsets.get(
                erasure.partition, 0) <= erasure.offset):
            self._forgotten.add(user_id)


def _positions(cold_ids: tuple[str, ...], facts: Mapping[str, _Facts]
               ) -> dict[str, np.ndarray]:
    by_category: dict[str, list[int]] = {}
    for position, item_id in enumerate(cold_ids):
        for category in facts[item_id].categories:
            by_category.setdefault(category, []).append(position)
    return {c: np.array(p, np.int64) for c, p in by_category.items()}
