"""The durable dataset store: consumed events, the catalogue (services.trainer.dataset_catalog),
consumer offsets and training jobs in one file.

Why SQLite in WAL mode with synchronous=FULL: a transaction is on disk when `append` returns,
so it survives kill -9 (and power loss); the rows and each partition's next offset commit in
the same transaction, so the offsets recorded with a snapshot describe exactly its rows; and a
reader's transaction sees one consistent version of the file while the consumer keeps
appending.

Rows are stored in the order they arrive (`seq`), so an append writes only the table's last
pages. Event ids are random: a table keyed by them dirtied a page per event once it outgrew
the page cache, which capped the store near 25,000 events/s past a few million rows. Each id
is stored once all the same: records before the stored offsets are skipped (a re-read after a
crash), and every other id is looked up in an in-memory index of the ids' 64-bit keys
(`services.trainer.event_keys`; a key found is confirmed against the row's id).
"""

from __future__ import annotations

import hashlib
import json
import logging
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
from services.trainer.event_keys import EventKeyIndex, event_key, event_keys

log = logging.getLogger(__name__)

_EVENTS_TABLE = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,  -- the order rows were stored in
    event_key INTEGER NOT NULL,  -- services.trainer.event_keys.event_key(event_id)
    event_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    item_id TEXT NOT NULL,
    type TEXT NOT NULL,
    value REAL,
    occurred_at_us INTEGER NOT NULL,
    kafka_partition INTEGER NOT NULL,
    kafka_offset INTEGER NOT NULL
)"""
_EVENT_COLUMNS = ("event_id, user_id, item_id, type, value, occurred_at_us, kafka_partition,"
                  " kafka_offset")
_SCHEMA = """
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

# WAL pages between the writer's checkpoints: 64 MiB, so a 50,000-event append is not split
# by a checkpoint's fsyncs (SQLite's default is 4 MiB).
_CHECKPOINT_PAGES = 16_384
# Rows read per query while a snapshot or the key index is read, so memory stays bounded.
_CHUNK_ROWS = 100_000
_SEP = "\x1f"  # ASCII unit separator: cannot occur in validated ids
# One chunk of events in stored order, each column as one string that SQLite builds: a Python
# object per value would cost more than everything else a snapshot does. A value prints with
# 17 significant digits ('!' lifts SQLite's 16-digit cap), which reads back as the same
# float64.
_CHUNK_QUERY = """
SELECT count(*), max(seq), group_concat(event_key, ','), group_concat(user_id, char(31)),
       group_concat(item_id, char(31)), group_concat(type, char(31)),
       group_concat(iif(value IS NULL, 'nan', printf('%!.17g', value)), ','),
       group_concat(occurred_at_us, ',')
FROM (SELECT * FROM events WHERE seq > ? ORDER BY seq LIMIT ?)
"""
_KEYS_QUERY = """
SELECT count(*), max(seq), group_concat(event_key, ','), group_concat(seq, ',')
FROM (SELECT seq, event_key FROM events WHERE seq > ? ORDER BY seq LIMIT ?)
"""


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
    """A consistent copy of the dataset, one entry per event in event key order (ties, a
    64-bit collision, in stored order): the same events give the same order however they
    arrived. Ids and types are indices (a Python string per event would take gigabytes at tens
    of millions); the catalogue is as it stood then (hidden items' events are in it all the
    same)."""

    lineage: Lineage
    users: np.ndarray  # int32 indices into user_ids
    items: np.ndarray  # int32 indices into item_ids
    types: np.ndarray  # int8 indices into type_names
    values: np.ndarray  # float64, NaN where the event has no value
    user_ids: np.ndarray  # object (str): the distinct ids, in natural order
    item_ids: np.ndarray  # object (str): the distinct ids, in natural order
    type_names: tuple[str, ...]  # in natural order
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
        self._db.execute(f"PRAGMA wal_autocheckpoint={_CHECKPOINT_PAGES}")
        _migrate_events(self._db)
        self._db.execute(_EVENTS_TABLE)
        self._db.executescript(_SCHEMA + dataset_catalog.SCHEMA)
        rows, last = self._db.execute("SELECT count(*), max(seq) FROM events").fetchone()
        self._rows = int(rows)
        self._last_seq = int(last or 0)
        self._keys: EventKeyIndex | None = None  # read at the first append

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
        """Store `events` and the next offset of each partition in one durable transaction;
        return how many events were new.

        An event is left out when its record comes before its partition's stored offset (a
        re-read after a crash, before Kafka got the commit; a stored offset never moves
        backwards) or its event_id is stored already or earlier in `events`.
        """
        with self._lock:
            db, keys = self._db, self._key_index()
            db.execute("BEGIN IMMEDIATE")
            try:
                fresh, fresh_keys = self._unstored(db, events, topic, keys)
                seqs = np.arange(self._last_seq + 1, self._last_seq + 1 + len(fresh))
                db.executemany(
                    f"INSERT INTO events (seq, event_key, {_EVENT_COLUMNS})"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [(seq, key, *e) for seq, key, e in zip(seqs.tolist(), fresh_keys.tolist(),
                                                           fresh, strict=True)])
                _save_offsets(db, topic, next_offsets)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            keys.add(fresh_keys, seqs)
            self._last_seq += len(fresh)
            self._rows += len(fresh)
        return len(fresh)

    def _unstored(self, db: sqlite3.Connection, events: Sequence[StoredEvent], topic: str,
                  keys: EventKeyIndex) -> tuple[list[StoredEvent], np.ndarray]:
        """`events` not stored yet, each id once (its first record), and their keys."""
        stored_offsets = self._offsets(db, topic)
        firsts: dict[str, StoredEvent] = {}
        for event in events:
            if event.offset >= stored_offsets.get(event.partition, 0):
                firsts.setdefault(event.event_id, event)
        fresh, fresh_keys = list(firsts.values()), event_keys(firsts)
        candidates = keys.candidates(fresh_keys)
        if not candidates:
            return fresh, fresh_keys
        seqs = [seq for found in candidates.values() for seq in found]
        stored = {event_id for (event_id,) in db.execute(
            "SELECT event_id FROM events WHERE seq IN (SELECT value FROM json_each(?))",
            (json.dumps(seqs),))}
        new = np.array([event.event_id not in stored for event in fresh], bool)
        return [event for event, keep in zip(fresh, new, strict=True) if keep], fresh_keys[new]

    def _key_index(self) -> EventKeyIndex:
        """The index of stored ids' keys, read from the table the first time."""
        if self._keys is None:
            keys, seqs, last = [], [], 0
            while True:
                count, last, chunk_keys, chunk_seqs = self._db.execute(
                    _KEYS_QUERY, (last, _CHUNK_ROWS)).fetchone()
                if not count:
                    break
                keys.append(np.fromstring(chunk_keys, dtype=np.int64, sep=","))
                seqs.append(np.fromstring(chunk_seqs, dtype=np.int64, sep=","))
            self._keys = EventKeyIndex()
            if keys:
                self._keys.add(np.concatenate(keys), np.concatenate(seqs))
        return self._keys

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
        """Read every event, the catalogue and both topics' offsets in one read transaction
        (the catalogue's hash: `dataset_catalog.content_hash`; the events': `content_hash`)."""
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
                last = 0
                while True:
                    count, last, *columns = db.execute(_CHUNK_QUERY,
                                                       (last, _CHUNK_ROWS)).fetchone()
                    if not count:
                        break
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
    """A snapshot's chunks (each column one separated string) into arrays."""

    def __init__(self) -> None:
        self._users, self._items, self._types = _Codes(), _Codes(), _Codes()
        self._parts: dict[str, list[np.ndarray]] = {
            "keys": [], "users": [], "items": [], "types": [], "values": [], "times": []}

    def add(self, chunk: Sequence[str]) -> None:
        """Take one chunk (event_key, user_id, item_id, type, value and occurred_at_us, each
        as one string), chunks in stored order."""
        keys, user_ids, item_ids, types, values, times = chunk
        parts = self._parts
        parts["keys"].append(np.fromstring(keys, dtype=np.int64, sep=","))
        parts["users"].append(self._users.encode(user_ids.split(_SEP)))
        parts["items"].append(self._items.encode(item_ids.split(_SEP)))
        parts["types"].append(self._types.encode(types.split(_SEP)).astype(np.int8))
        parts["values"].append(np.fromstring(values, dtype=np.float64, sep=","))
        parts["times"].append(np.fromstring(times, dtype=np.int64, sep=","))

    def snapshot(self, topic: str, offsets: Mapping[int, int], *, catalog: CatalogSnapshot,
                 catalog_topic: str, catalog_offsets: Mapping[int, int]) -> Snapshot:
        keys, users, items, types, values, times = (
            np.concatenate(parts) if parts else np.zeros(0, dtype)
            for parts, dtype in zip(self._parts.values(), (np.int64, np.int32, np.int32,
                                                           np.int8, np.float64, np.int64),
                                    strict=True))
        self._parts.clear()  # each column is held once while it is put in order
        order = np.argsort(keys, kind="stable")
        keys, values, times = keys[order], values[order], times[order]
        user_ids, users = self._users.natural(users[order])
        item_ids, items = self._items.natural(items[order])
        type_names, types = self._types.natural(types[order])
        types = types.astype(np.int8)
        lineage = Lineage(topic=topic, row_count=len(users),
                          content_hash=content_hash(
                              keys, users=(user_ids, users), items=(item_ids, items),
                              types=(type_names, types), values=values, times=times),
                          partition_offsets=dict(offsets), user_count=len(user_ids),
                          item_count=len(item_ids), catalog_topic=catalog_topic,
                          catalog_offsets=dict(catalog_offsets),
                          catalog_item_count=len(catalog.items),
                          catalog_user_count=len(catalog.users),
                          catalog_content_hash=catalog.content_hash)
        return Snapshot(lineage, users, items, types, values, user_ids, item_ids,
                        tuple(type_names.tolist()), catalog)


Indexed = tuple[np.ndarray, np.ndarray]  # distinct strings in natural order, and an index each


def content_hash(keys: np.ndarray, *, users: Indexed, items: Indexed, types: Indexed,
                 values: np.ndarray, times: np.ndarray) -> str:
    """The events' content hash: SHA-256 over the SHA-256 digests of, in this order, the event
    keys (little-endian int64), the user ids (each followed by U+001F, UTF-8) then each
    event's index among them (little-endian int32), the same for items (int32) and types
    (int8), the values (little-endian float64, NaN where absent) and occurred_at_us
    (little-endian int64); every per-event array in the snapshot's order, ids in natural
    order. The same events give the same hash however they were partitioned or delivered.
    (Hashes before the store kept rows in arrival order covered the event ids' text in id
    order: compare hashes made by the same version.)"""
    def text(ids: np.ndarray) -> bytes:
        return "".join(f"{v}{_SEP}" for v in ids.tolist()).encode()

    def little(values: np.ndarray, dtype: str) -> bytes:
        return np.ascontiguousarray(values, dtype).tobytes()

    parts = [little(keys, "<i8")]
    for (ids, index), dtype in ((users, "<i4"), (items, "<i4"), (types, "<i1")):
        parts += [text(ids), little(index, dtype)]
    parts += [little(values, "<f8"), little(times, "<i8")]
    return hashlib.sha256(b"".join(hashlib.sha256(p).digest() for p in parts)).hexdigest()


def _migrate_events(db: sqlite3.Connection) -> None:
    """Rows of the earlier layout (keyed by event_id) into this one, once, in topic order."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(events)")}
    if not columns or "event_key" in columns:
        return
    log.info("moving the dataset's events to the arrival-order layout (once)")
    db.create_function("event_key", 1, event_key, deterministic=True)
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute("ALTER TABLE events RENAME TO events_by_id")
        db.execute(_EVENTS_TABLE)
        db.execute(f"INSERT INTO events (event_key, {_EVENT_COLUMNS})"
                   f" SELECT event_key(event_id), {_EVENT_COLUMNS} FROM events_by_id"
                   " ORDER BY kafka_partition, kafka_offset")
        db.execute("DROP TABLE events_by_id")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def _compact(ids: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The ids that `codes` uses, in their order, and `codes` renumbered over them (int64)."""
    present = np.zeros(len(ids), bool)
    present[codes] = True
    renumbered = np.cumsum(present) - 1
    return ids[present], renumbered[codes].astype(np.int64)
