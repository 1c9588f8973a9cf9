"""The catalogue as the dataset store keeps it beside the events: one row per item (categories,
labels, hidden flag, availability window, last change) and per user (labels).

The catalogue follower (services.trainer.catalog_follower) writes the rows and the catalogue
topic's offsets in one transaction of the store; a snapshot reads them in the same read
transaction as the events, hashes them (`content_hash`) and hands them to training. Hidden items
keep their rows and their events: their interactions still teach; only serving leaves them out.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

# categories and labels: a JSON array of strings, in the record's order.
SCHEMA = """
CREATE TABLE IF NOT EXISTS catalog_items (
    item_id TEXT PRIMARY KEY,
    categories TEXT NOT NULL,
    labels TEXT NOT NULL,
    hidden INTEGER NOT NULL,
    available_from_us INTEGER,
    available_until_us INTEGER,
    updated_at_us INTEGER
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS catalog_users (
    user_id TEXT PRIMARY KEY,
    labels TEXT NOT NULL
) WITHOUT ROWID;
"""


class CatalogItem(NamedTuple):
    """An item's row; times in microseconds since the epoch, None where the record has none."""

    item_id: str
    categories: tuple[str, ...]
    labels: tuple[str, ...]
    hidden: bool
    available_from_us: int | None
    available_until_us: int | None
    updated_at_us: int | None


class CatalogUser(NamedTuple):
    """A user's profile row."""

    user_id: str
    labels: tuple[str, ...]


@dataclass
class CatalogWrites:
    """What a run of catalogue records leaves in the store, the last record of an id winning:
    its new row, or None where the item was deleted or the user erased."""

    items: dict[str, CatalogItem | None] = field(default_factory=dict)
    users: dict[str, CatalogUser | None] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class CatalogSnapshot:
    """The catalogue a snapshot was taken with, each kind in id order, and its content hash."""

    items: tuple[CatalogItem, ...]
    users: tuple[CatalogUser, ...]
    content_hash: str


def hashed_bytes(row: CatalogItem | CatalogUser) -> bytes:
    """A row as `content_hash` reads it: the one definition of the layout.

    One JSON array per row (UTF-8, no whitespace, non-ASCII characters as they are, followed by
    a newline): ["item", item_id, [categories...], [labels...], hidden, available_from_us,
    available_until_us, updated_at_us] with true/false and null for a missing time, or
    ["user", user_id, [labels...]]. Lists keep the record's order.
    """
    if isinstance(row, CatalogItem):
        fields: list[object] = ["item", row.item_id, list(row.categories), list(row.labels),
                                row.hidden, row.available_from_us, row.available_until_us,
                                row.updated_at_us]
    else:
        fields = ["user", row.user_id, list(row.labels)]
    return json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def content_hash(items: Iterable[CatalogItem], users: Iterable[CatalogUser]) -> str:
    """Hex SHA-256 over `hashed_bytes` of every item in item_id order, then every user in
    user_id order (code point order, which is also SQLite's for UTF-8 text)."""
    digest = hashlib.sha256()
    for item in items:
        digest.update(hashed_bytes(item))
    for user in users:
        digest.update(hashed_bytes(user))
    return digest.hexdigest()


def write(db: sqlite3.Connection, writes: CatalogWrites) -> None:
    """Apply `writes` inside the caller's transaction."""
    db.executemany("INSERT OR REPLACE INTO catalog_items VALUES (?, ?, ?, ?, ?, ?, ?)", [
        (i.item_id, _json(i.categories), _json(i.labels), int(i.hidden), i.available_from_us,
         i.available_until_us, i.updated_at_us)
        for i in writes.items.values() if i is not None])
    db.executemany("DELETE FROM catalog_items WHERE item_id = ?",
                   [(k,) for k, i in writes.items.items() if i is None])
    db.executemany("INSERT OR REPLACE INTO catalog_users VALUES (?, ?)",
                   [(u.user_id, _json(u.labels)) for u in writes.users.values() if u is not None])
    db.executemany("DELETE FROM catalog_users WHERE user_id = ?",
                   [(k,) for k, u in writes.users.items() if u is None])


def read(db: sqlite3.Connection) -> CatalogSnapshot:
    """Every row, inside the caller's (read) transaction."""
    items = tuple(
        CatalogItem(item_id, tuple(json.loads(categories)), tuple(json.loads(labels)),
                    bool(hidden), available_from, available_until, updated_at)
        for item_id, categories, labels, hidden, available_from, available_until, updated_at
        in db.execute("SELECT item_id, categories, labels, hidden, available_from_us,"
                      " available_until_us, updated_at_us FROM catalog_items ORDER BY item_id"))
    users = tuple(CatalogUser(user_id, tuple(json.loads(labels))) for user_id, labels
                  in db.execute("SELECT user_id, labels FROM catalog_users ORDER BY user_id"))
    return CatalogSnapshot(items, users, content_hash(items, users))


def _json(values: tuple[str, ...]) -> str:
    return json.dumps(list(values), ensure_ascii=False)
