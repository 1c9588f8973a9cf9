"""The catalogue as its Kafka topic describes it: items and users' profiles, folded from the
topic's `CatalogChange` records in order, the last record of a key winning.

Each service that needs the catalogue at hand keeps a view, filled by a consumer loop that
reads the topic from its start without a consumer group (`services.core.consumer`): ingest
answers GetItem and ListItems from it, and the recommender what it may recommend. Records are
keyed by "item:<id>" or "user:<id>", so a compacted topic keeps each one's last record and the
fold still ends in the same state.

One thread writes a view (the consumer's handler) while others read it: every change replaces
whole dictionary entries, and a reader takes what it needs with one lookup, or copies a
dictionary's keys in one call.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from google.protobuf.timestamp_pb2 import Timestamp

from recsys.events.v1.catalog_pb2 import CatalogChange, Item, User, UserErasure
from services.core.consumer import Record

ITEM_KEY = "item:"
USER_KEY = "user:"


def record_key(change: CatalogChange) -> bytes:
    """The topic key of a change: its item's or user's, so that key's records stay in order."""
    kind = change.WhichOneof("change")
    if kind == "item":
        return f"{ITEM_KEY}{change.item.item_id}".encode()
    if kind == "deleted_item_id":
        return f"{ITEM_KEY}{change.deleted_item_id}".encode()
    if kind == "user":
        return f"{USER_KEY}{change.user.user_id}".encode()
    if kind == "user_erasure":
        return f"{USER_KEY}{change.user_erasure.user_id}".encode()
    raise ValueError("an empty CatalogChange has no key")


def available(item: Item, now_s: float) -> bool:
    """Whether `item` may be recommended at `now_s` (epoch seconds): not hidden, and inside its
    availability window."""
    if item.hidden:
        return False
    if item.HasField("available_from") and now_s < _seconds(item.available_from):
        return False
    return not (item.HasField("available_until") and now_s >= _seconds(item.available_until))


def window_bounds(item: Item) -> tuple[float, ...]:
    """The instants (epoch seconds) at which `item`'s availability changes by itself."""
    bounds = []
    if item.HasField("available_from"):
        bounds.append(_seconds(item.available_from))
    if item.HasField("available_until"):
        bounds.append(_seconds(item.available_until))
    return tuple(bounds)


def _seconds(stamp: Timestamp) -> float:
    return stamp.seconds + stamp.nanos / 1e9


#: The logger of erasures' audit lines: who asked, when, what was erased; never the user's
#: data, and the user only as `audit_id`.
AUDIT_LOG = "recsys.audit"


def audit_id(user_id: str) -> str:
    """How audit lines name a user: the hex SHA-256 of the id (whoever knows the id can find
    its lines; the lines alone do not reveal it)."""
    return hashlib.sha256(user_id.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Erasure:
    """Where a user's erasure is on the catalogue topic, and which events it covers."""

    partition: int  # of the catalogue topic
    offset: int  # the record that erased the user
    message: UserErasure

    @property
    def interaction_offsets(self) -> Mapping[int, int]:
        """Per partition of the interactions topic, the end offset when it was accepted."""
        return self.message.interaction_offsets

    def covers(self, partition: int, offset: int) -> bool:
        """Whether the interactions topic's record at (`partition`, `offset`) was acknowledged
        before the erasure: the user's events before it are erased, later ones are new."""
        return offset < self.interaction_offsets.get(partition, 0)


@dataclass(frozen=True)
class Changes:
    """The items and users a batch of records changed."""

    items: frozenset[str]
    users: frozenset[str]

    def __bool__(self) -> bool:
        return bool(self.items or self.users)


class CatalogView:
    """Items (`items`; deleted ones in `deleted`), users' profiles, the users erased, and how
    far the topic has been read (`positions`, `version`)."""

    def __init__(self) -> None:
        self.items: dict[str, Item] = {}
        self.deleted: set[str] = set()
        self.users: dict[str, User] = {}
        self.erasures: dict[str, Erasure] = {}
        #: Per partition of the topic, the offset after the last record applied.
        self.positions: dict[int, int] = {}

    @property
    def version(self) -> str:
        """What has been read, as "<partition>:<next offset>,...": views with the same version
        hold the same catalogue."""
        return ",".join(f"{p}:{o}" for p, o in sorted(self.positions.items()))

    def apply(self, records: Iterable[Record[CatalogChange]]) -> Changes:
        """Fold `records` in; the items and users they changed. A record before the view's
        position is skipped (a follower that reconnected reads the topic from its start
        again: replaying it would show older states for a while), and so is one that does
        not decode (its position still counts)."""
        items: set[str] = set()
        users: set[str] = set()
        for record in records:
            if record.offset < self.positions.get(record.partition, 0):
                continue
            self.positions[record.partition] = record.offset + 1
            change = record.message
            kind = change.WhichOneof("change") if change is not None else None
            if change is None or kind is None:
                continue
            if kind == "item":
                self.items[change.item.item_id] = change.item
                self.deleted.discard(change.item.item_id)
                items.add(change.item.item_id)
            elif kind == "deleted_item_id":
                self.items.pop(change.deleted_item_id, None)
                self.deleted.add(change.deleted_item_id)
                items.add(change.deleted_item_id)
            elif kind == "user":
                self._user(change.user, record)
                users.add(change.user.user_id)
            else:
                erasure = change.user_erasure
                self.users.pop(erasure.user_id, None)
                self.erasures[erasure.user_id] = Erasure(record.partition, record.offset,
                                                         erasure)
                users.add(erasure.user_id)
        return Changes(frozenset(items), frozenset(users))

    def _user(self, user: User, record: Record[CatalogChange]) -> None:
        self.users[user.user_id] = user
        if user.HasField("erasure") and user.user_id not in self.erasures:
            # The erasure record itself is gone (a compacted topic): this later record that
            # carries it stands in for it.
            self.erasures[user.user_id] = Erasure(record.partition, record.offset, user.erasure)
