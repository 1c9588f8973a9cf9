"""The durable dataset store: consumed events, consumer offsets and training jobs in one file.

Why SQLite in WAL mode with synchronous=FULL: a transaction is on disk when `append` returns,
so it survives kill -9 (and power loss); `event_id` is the primary key, so INSERT OR IGNORE
deduplicates for free; the rows and each partition's next offset commit in the same
transaction, so the offsets recorded with a snapshot describe exactly its rows; and a reader's
transaction sees one consistent version of the file while the consumer keeps appending.
"""

from __future__ import annotations

import hashlib
import math
import sqlite3
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from services.model.lineage import Lineage

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    event_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    item_id TEXT NOT NULL,
    type TEXT NOT NULL,
    value REAL,
    occurred_at_us INTEGER NOT NULL,
    kafka_partition INTEGER NOT NULL,
    kafka_offset INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS offsets (
    topic TEXT NOT NULL,
    kafka_partition INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (topic, kafka_partition)
);
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    state TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_by_created ON jobs (created_at);
"""

# Rows hashed and converted per fetch, so memory stays bounded while a snapshot is read.
_FETCH_ROWS = 50_000
_SEP = "\x1f"  # ASCII unit separator: cannot occur in validated ids


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """One consumed interaction as the dataset keeps it."""

    event_id: str
    user_id: str
    item_id: str
    type: str  # an InteractionType name without its prefix, lower case: "view", "rating", ...
    value: float | None
    occurred_at_us: int
    partition: int
    offset: int


@dataclass(frozen=True, eq=False)
class TrainingData:
    """Weighted (user, item) index pairs and the ids the indices stand for."""

    users: np.ndarray  # int64 indices into user_ids
    items: np.ndarray  # int64 indices into item_ids
    weights: np.ndarray  # float64, > 0
    user_ids: np.ndarray  # object (str), in natural order
    item_ids: np.ndarray  # object (str), in natural order

    def __len__(self) -> int:
        return len(self.users)


@dataclass(frozen=True, eq=False)
class Snapshot:
    """A consistent copy of the dataset, one entry per event, in event_id order."""

    lineage: Lineage
    user_ids: np.ndarray  # object (str)
    item_ids: np.ndarray  # object (str)
    types: np.ndarray  # object (str)
    values: np.ndarray  # float64, NaN where the event has no value

    def training_data(self, type_weights: Mapping[str, float]) -> TrainingData:
        """Weigh each event and index its ids; events weighing 0 are left out.

        Weight = the type's weight x the event's value when it has one (a quantity). A
        rating's value is a score, not an amount: like the offline protocol, the trainer
        takes every rating as an implicit positive of the rating type's weight.
        """
        kinds, kind_index = np.unique(self.types, return_inverse=True)
        weights = np.array([type_weights.get(k, 0.0) for k in kinds], np.float64)[kind_index]
        amount = np.where(self.types == "rating", np.nan, self.values)
        weights = np.where(np.isnan(amount), weights, weights * amount)
        keep = weights > 0
        user_ids, users = index_ids(self.user_ids[keep])
        item_ids, items = index_ids(self.item_ids[keep])
        return TrainingData(users=users, items=items, weights=weights[keep].astype(np.float64),
                            user_ids=user_ids, item_ids=item_ids)


class DatasetStore:
    """The SQLite file; safe to share between the consumer thread, jobs and the event loop.

    Writes go through one connection under a lock; a snapshot reads on its own connection so
    the consumer is never blocked by a long read.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = self._connect()
        self._db.executescript(_SCHEMA)
        self._rows = int(self._db.execute("SELECT count(*) FROM events").fetchone()[0])

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                             timeout=30.0)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        return db

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @property
    def row_count(self) -> int:
        """Distinct events stored."""
        return self._rows

    def append(
        self, events: Sequence[StoredEvent], *, topic: str, next_offsets: Mapping[int, int]
    ) -> int:
        """Store `events` (ignoring known event_ids) and the next offset of each partition in
        one durable transaction; return how many events were new.

        A partition's stored offset never moves backwards, so re-reading old records after a
        crash (before Kafka got the commit) changes nothing.
        """
        rows = [
            (e.event_id, e.user_id, e.item_id, e.type, e.value, e.occurred_at_us, e.partition,
             e.offset)
            for e in events
        ]
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                before = db.total_changes
                db.executemany("INSERT OR IGNORE INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                               rows)
                added = db.total_changes - before
                db.executemany(
                    "INSERT INTO offsets VALUES (?, ?, ?) ON CONFLICT DO UPDATE"
                    " SET next_offset = max(next_offset, excluded.next_offset)",
                    [(topic, p, o) for p, o in next_offsets.items()],
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            self._rows += added
        return added

    def delete_user_events(self, user_id: str, *, before: Mapping[int, int]) -> int:
        """Delete `user_id`'s events read before the offsets `before` (per partition); how
        many rows went (services.trainer.erasure)."""
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                start = db.total_changes
                db.executemany(
                    "DELETE FROM events WHERE user_id = ? AND kafka_partition = ?"
                    " AND kafka_offset < ?",
                    [(user_id, p, o) for p, o in before.items()])
                deleted = db.total_changes - start
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            self._rows -= deleted
        return deleted

    def offsets(self, topic: str) -> dict[int, int]:
        """The next offset to read per partition, as stored with the rows."""
        with self._lock:
            return self._offsets(self._db, topic)

    @staticmethod
    def _offsets(db: sqlite3.Connection, topic: str) -> dict[int, int]:
        rows = db.execute(
            "SELECT kafka_partition, next_offset FROM offsets WHERE topic = ?", (topic,)
        )
        return {int(p): int(o) for p, o in rows}

    def snapshot(self, topic: str) -> Snapshot:
        """Read every event and the offsets in one read transaction, hashing as it goes.

        The hash is SHA-256 over each event's content (id, user, item, type, value, time) in
        event_id order: the same events give the same hash however they were partitioned.
        """
        db = self._connect()
        try:
            db.execute("BEGIN")
            offsets = self._offsets(db, topic)
            cursor = db.execute(
                "SELECT event_id, user_id, item_id, type, value, occurred_at_us FROM events"
                " ORDER BY event_id"
            )
            digest = hashlib.sha256()
            columns: list[list[Any]] = [[], [], [], []]
            while chunk := cursor.fetchmany(_FETCH_ROWS):
                digest.update("".join(_canonical(row) for row in chunk).encode())
                # user_id, item_id, type and value: the columns after event_id
                for column, part in zip(columns, list(zip(*chunk, strict=True))[1:5],
                                        strict=True):
                    column.extend(part)
            db.execute("COMMIT")
        finally:
            db.close()
        # object arrays: a fixed-width str array would pad every id to the longest one
        user_ids = np.array(columns[0], dtype=object)
        item_ids = np.array(columns[1], dtype=object)
        lineage = Lineage(
            topic=topic,
            row_count=len(user_ids),
            content_hash=digest.hexdigest(),
            partition_offsets=offsets,
            user_count=len(np.unique(user_ids)),
            item_count=len(np.unique(item_ids)),
        )
        values = np.array([math.nan if v is None else v for v in columns[3]], dtype=np.float64)
        types = np.array(columns[2], dtype=object)
        return Snapshot(lineage, user_ids, item_ids, types, values)

    # -- training jobs ---------------------------------------------------------------------

    def save_job(self, job_id: str, *, created_at: float, state: str, body: str) -> None:
        """Insert or replace one job (its body is the caller's JSON), durably."""
        with self._lock:
            self._db.execute(
                "INSERT INTO jobs VALUES (?, ?, ?, ?) ON CONFLICT DO UPDATE"
                " SET state = excluded.state, body = excluded.body",
                (job_id, created_at, state, body),
            )

    def load_job(self, job_id: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT body FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        return None if row is None else str(row[0])

    def load_jobs(self, *, limit: int | None = None, states: Iterable[str] | None = None
                  ) -> list[str]:
        """Job bodies, newest first; optionally only those in `states`."""
        query, params = "SELECT body FROM jobs", list[Any]()
        if states is not None:
            wanted = list(states)
            query += f" WHERE state IN ({', '.join('?' * len(wanted))})"
            params.extend(wanted)
        query += " ORDER BY created_at DESC, rowid DESC"
        if limit is not None:
            query += " LIMIT ?"
            params.append(limit)
        with self._lock:
            return [str(body) for (body,) in self._db.execute(query, params)]


def _natural_key(value: str) -> tuple[int, int, str]:
    """Numeric ids by value, before all others by text: "2" < "10" < "a"."""
    return (0, int(value), value) if value.isascii() and value.isdigit() else (1, 0, value)


def index_ids(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct ids in natural order, and each entry's index among them.

    The order decides which random split the evaluation draws, so the natural one is used:
    a dataset with numeric ids (MovieLens) is then split exactly as the benchmark splits it.
    """
    distinct = sorted(set(ids.tolist()), key=_natural_key)
    position = {value: n for n, value in enumerate(distinct)}
    indices = np.fromiter((position[v] for v in ids.tolist()), np.int64, count=len(ids))
    return np.array(distinct, dtype=object), indices


def _canonical(row: tuple[Any, ...]) -> str:
    event_id, user_id, item_id, kind, value, occurred_at_us = row
    value_text = "" if value is None else repr(float(value))
    return _SEP.join((event_id, user_id, item_id, kind, value_text, str(occurred_at_us))) + "\n"
