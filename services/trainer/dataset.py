"""The durable dataset store: consumed events, the catalogue (services.trainer.dataset_catalog),
consumer offsets and training jobs in one file.

Why SQLite in WAL mode with synchronous=FULL: a transaction is on disk when `append` returns,
so it survives kill -9 (and power loss); `event_id` is the primary key, so INSERT OR IGNORE
deduplicates for free; the rows and each partition's next offset commit in the same
transaction, so the offsets recorded with a snapshot describe exactly its rows; and a reader's
transaction sees one consistent version of the file while the consumer keeps appending.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from services.model.lineage import Lineage
from services.trainer import dataset_catalog
from services.trainer.dataset_catalog import CatalogSnapshot, CatalogWrites

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
) WITHOUT ROWID;
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

# The writing connection's page cache and WAL pages between checkpoints (see DatasetStore).
_WRITER_CACHE_KIB = 256 << 10
_CHECKPOINT_PAGES = 16_384
# Events read per query while a snapshot is read, so memory stays bounded.
_CHUNK_ROWS = 100_000
_SEP = "\x1f"  # ASCII unit separator: cannot occur in validated ids
# One chunk of events in event_id order, each column as one string that SQLite builds: a
# Python object per value would cost more than everything else a snapshot does. A value
# prints with 17 significant digits ('!' lifts SQLite's 16-digit cap), which reads back as
# the same float64.
_CHUNK_QUERY = """
SELECT count(*), group_concat(event_id, char(31)), group_concat(user_id, char(31)),
       group_concat(item_id, char(31)), group_concat(type, char(31)),
       group_concat(iif(value IS NULL, 'nan', printf('%!.17g', value)), ','),
       group_concat(occurred_at_us, ',')
FROM (SELECT * FROM events WHERE event_id > ? ORDER BY event_id LIMIT ?)
"""
# The columns the content hash covers, in the order their digests are combined.
HASHED_COLUMNS = ("event_id", "user_id", "item_id", "type", "value", "occurred_at_us")


class StoredEvent(NamedTuple):
    """One consumed interaction as the dataset keeps it: a row of the events table, in its
    column order (a tuple, so a batch goes to SQLite as it is)."""

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
    """A consistent copy of the dataset, one entry per event in event_id order, its ids and
    types as indices (a Python string per event would take gigabytes at tens of millions), and
    the catalogue as it stood then (hidden items' events are in it all the same)."""

    lineage: Lineage
    users: np.ndarray  # int32 indices into user_ids
    items: np.ndarray  # int32 indices into item_ids
    types: np.ndarray  # int8 indices into type_names
    values: np.ndarray  # float64, NaN where the event has no value
    user_ids: np.ndarray  # object (str): the distinct ids, in natural order
    item_ids: np.ndarray  # object (str): the distinct ids, in natural order
    type_names: tuple[str, ...]
    catalog: CatalogSnapshot

    def training_data(self, type_weights: Mapping[str, float]) -> TrainingData:
        """Weigh each event and index its ids; events weighing 0 are left out.

        Weight = the type's weight x the event's value when it has one (a quantity). A
        rating's value is a score, not an amount: like the offline protocol, the trainer
        takes every rating as an implicit positive of the rating type's weight.
        """
        names = self.type_names
        by_type = np.array([type_weights.get(k, 0.0) for k in names], np.float64)
        is_rating = np.array([k == "rating" for k in names], bool)
        weights = by_type[self.types]
        amount = np.where(is_rating[self.types], np.nan, self.values)
        weights = np.where(np.isnan(amount), weights, weights * amount)
        keep = weights > 0
        user_ids, users = _compact(self.user_ids, self.users[keep])
        item_ids, items = _compact(self.item_ids, self.items[keep])
        return TrainingData(users=users, items=items, weights=weights[keep],
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
        # The writer's own tuning. Event ids are random, so each appended row lands on a page
        # of its own in the events B-tree: a large page cache keeps those pages read once,
        # and a checkpoint every 64 MiB of WAL (not 4) writes a page that several
        # transactions changed back once.
        self._db.execute(f"PRAGMA cache_size=-{_WRITER_CACHE_KIB}")
        self._db.execute(f"PRAGMA wal_autocheckpoint={_CHECKPOINT_PAGES}")
        self._db.executescript(_SCHEMA + dataset_catalog.SCHEMA)
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
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                before = db.total_changes
                db.executemany("INSERT OR IGNORE INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                               events)
                added = db.total_changes - before
                _save_offsets(db, topic, next_offsets)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            self._rows += added
        return added

    def delete_user_events(self, user_id: str, *, before: Mapping[int, int]) -> int:
        """Delete `user_id`'s events read before the offsets `before` (per partition); how
        many rows went (services.trainer.catalog_follower)."""
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

    def apply_catalog(self, writes: CatalogWrites, *, topic: str,
                      next_offsets: Mapping[int, int]) -> None:
        """Store the catalogue's changed rows and the next offset of each partition of its
        `topic` in one durable transaction (services.trainer.catalog_follower)."""
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                dataset_catalog.write(db, writes)
                _save_offsets(db, topic, next_offsets)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

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

    def snapshot(self, topic: str, *, catalog_topic: str = "") -> Snapshot:
        """Read every event, the catalogue and both topics' offsets in one read transaction,
        hashing as it goes (the catalogue's hash: `dataset_catalog.content_hash`).

        The content hash (from this version on; earlier ones hashed row by row, so compare
        hashes made by the same version) is SHA-256 over the SHA-256 digests of the columns
        in `HASHED_COLUMNS` order, each column taken in event_id order: a text column as its
        values, each followed by U+001F, in UTF-8; value as little-endian float64 (NaN where
        absent); occurred_at_us as little-endian int64. The same events give the same hash
        however they were partitioned or delivered.
        """
        db = self._connect()
        reader = _ColumnReader()
        # SQLite builds the next chunk (it releases the GIL meanwhile) while a worker thread
        # takes the last one in: a third less time; at most two chunks are held at once.
        with ThreadPoolExecutor(1, thread_name_prefix="snapshot") as worker:
            taken: Future[None] | None = None
            try:
                db.execute("BEGIN")
                offsets = self._offsets(db, topic)
                catalog_offsets = self._offsets(db, catalog_topic)
                catalog = dataset_catalog.read(db)
                last = ""
                while True:
                    count, *columns = db.execute(_CHUNK_QUERY, (last, _CHUNK_ROWS)).fetchone()
                    if not count:
                        break
                    last = columns[0].rpartition(_SEP)[2]
                    if taken is not None:
                        taken.result()
                    taken = worker.submit(reader.add, columns)
                db.execute("COMMIT")
            finally:
                db.close()
            if taken is not None:
                taken.result()
        return reader.snapshot(topic, offsets, catalog=catalog, catalog_topic=catalog_topic,
                               catalog_offsets=catalog_offsets)

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


def _save_offsets(db: sqlite3.Connection, topic: str, next_offsets: Mapping[int, int]) -> None:
    """Record each partition's next offset; a stored one never moves backwards."""
    db.executemany(
        "INSERT INTO offsets VALUES (?, ?, ?) ON CONFLICT DO UPDATE"
        " SET next_offset = max(next_offset, excluded.next_offset)",
        [(topic, p, o) for p, o in next_offsets.items()],
    )


def _natural_key(value: str) -> tuple[int, int, str]:
    """Numeric ids by value, before all others by text: "2" < "10" < "a"."""
    return (0, int(value), value) if value.isascii() and value.isdigit() else (1, 0, value)


class _Codes:
    """Distinct strings numbered in the order they first come."""

    def __init__(self) -> None:
        self.known: dict[str, int] = {}

    def encode(self, values: list[str]) -> np.ndarray:
        add, known = self.known.setdefault, self.known
        return np.array([add(v, len(known)) for v in values], np.int32)

    def natural(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The distinct strings in natural order, and `codes` renumbered to match.

        The order decides which random split the evaluation draws, so the natural one is
        used: a dataset with numeric ids (MovieLens) is then split as the benchmark splits it.
        """
        distinct = list(self.known)
        order = sorted(range(len(distinct)), key=lambda n: _natural_key(distinct[n]))
        rank = np.empty(len(distinct), np.int32)
        rank[order] = np.arange(len(distinct), dtype=np.int32)
        ids = np.array([distinct[n] for n in order] or [], dtype=object)
        return ids, rank[codes]


def index_ids(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct ids in natural order, and each entry's index among them: a snapshot's
    numbering, for data that does not come from the store (benchmarks)."""
    codes = _Codes()
    distinct, indices = codes.natural(codes.encode([str(v) for v in ids.tolist()]))
    return distinct, indices.astype(np.int64)


class _ColumnReader:
    """A snapshot's chunks (each column one separated string) into hashes and arrays."""

    def __init__(self) -> None:
        self._digests = {name: hashlib.sha256() for name in HASHED_COLUMNS}
        self._users, self._items, self._types = _Codes(), _Codes(), _Codes()
        self._parts: dict[str, list[np.ndarray]] = {"users": [], "items": [], "types": [],
                                                     "values": []}

    def add(self, chunk: Sequence[str]) -> None:
        """Take one chunk (a string per column of `HASHED_COLUMNS`), chunks in event_id
        order."""
        event_ids, user_ids, item_ids, types, values, times = chunk
        digests = self._digests
        for name, text in (("event_id", event_ids), ("user_id", user_ids),
                           ("item_id", item_ids), ("type", types)):
            digests[name].update(text.encode() + _SEP.encode())
        floats = np.fromstring(values, dtype="<f8", sep=",")
        digests["value"].update(floats.tobytes())
        digests["occurred_at_us"].update(np.fromstring(times, dtype="<i8", sep=",").tobytes())
        parts = self._parts
        parts["users"].append(self._users.encode(user_ids.split(_SEP)))
        parts["items"].append(self._items.encode(item_ids.split(_SEP)))
        parts["types"].append(self._types.encode(types.split(_SEP)).astype(np.int8))
        parts["values"].append(floats)

    def snapshot(self, topic: str, offsets: Mapping[int, int], *, catalog: CatalogSnapshot,
                 catalog_topic: str, catalog_offsets: Mapping[int, int]) -> Snapshot:
        users, items, types, values = (
            np.concatenate(parts) if parts else np.zeros(0, dtype)
            for parts, dtype in zip(self._parts.values(), (np.int32, np.int32, np.int8, np.float64),
                                    strict=True))
        user_ids, users = self._users.natural(users)
        item_ids, items = self._items.natural(items)
        combined = hashlib.sha256(b"".join(d.digest() for d in self._digests.values()))
        lineage = Lineage(topic=topic, row_count=len(users), content_hash=combined.hexdigest(),
                          partition_offsets=dict(offsets), user_count=len(user_ids),
                          item_count=len(item_ids), catalog_topic=catalog_topic,
                          catalog_offsets=dict(catalog_offsets),
                          catalog_item_count=len(catalog.items),
                          catalog_user_count=len(catalog.users),
                          catalog_content_hash=catalog.content_hash)
        return Snapshot(lineage, users, items, types, values, user_ids, item_ids,
                        tuple(self._types.known), catalog)


def _compact(ids: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The ids that `codes` uses, in their order, and `codes` renumbered over them (int64)."""
    present = np.zeros(len(ids), bool)
    present[codes] = True
    renumbered = np.cumsum(present) - 1
    return ids[present], renumbered[codes].astype(np.int64)
