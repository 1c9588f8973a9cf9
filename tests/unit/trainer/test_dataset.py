from __future__ import annotations

import hashlib
import math
import sqlite3
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest

from services.trainer import dataset
from services.trainer.dataset import DatasetStore, StoredEvent, index_ids
from services.trainer.event_keys import event_key
from services.trainer.settings import DEFAULT_TYPE_WEIGHTS


def event(n: int, *, user: str = "u1", item: str = "i1", kind: str = "view",
          value: float | None = None, partition: int = 0, offset: int | None = None
          ) -> StoredEvent:
    return StoredEvent(event_id=f"e{n:04d}", user_id=user, item_id=item, type=kind, value=value,
                       occurred_at_us=1_700_000_000_000_000 + n, partition=partition,
                       offset=n if offset is None else offset)


@pytest.fixture
def store(tmp_path: Path) -> DatasetStore:
    return DatasetStore(tmp_path / "data" / "trainer.sqlite3")


def test_duplicates_by_event_id_count_once(store: DatasetStore) -> None:
    assert store.append([event(1), event(2)], topic="t", next_offsets={0: 3}) == 2
    assert store.append([event(2), event(3)], topic="t", next_offsets={0: 4}) == 1
    assert store.row_count == 3


def test_offsets_commit_with_rows_and_never_move_backwards(store: DatasetStore) -> None:
    store.append([event(1)], topic="t", next_offsets={0: 10, 1: 5})
    store.append([event(1)], topic="t", next_offsets={0: 7})  # a re-read after a crash
    assert store.offsets("t") == {0: 10, 1: 5}
    assert store.offsets("other") == {}


def test_deleting_a_users_events_before_offsets_keeps_later_and_others(
        store: DatasetStore) -> None:
    store.append([event(1, user="gone"), event(2, user="gone", partition=1, offset=4),
                  event(3, user="gone", partition=1, offset=9), event(4, user="kept")],
                 topic="t", next_offsets={0: 5, 1: 10})
    assert store.delete_user_events("gone", before={0: 5, 1: 5}) == 2
    assert store.row_count == 2
    assert store.delete_user_events("gone", before={0: 5, 1: 5}) == 0  # done: a no-op
    assert sorted(store.snapshot("t").user_ids.tolist()) == ["gone", "kept"]
    assert store.delete_user_events("gone", before={1: 10}) == 1


def test_rows_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "trainer.sqlite3"
    first = DatasetStore(path)
    first.append([event(1), event(2)], topic="t", next_offsets={0: 3})
    first.close()
    again = DatasetStore(path)
    assert again.row_count == 2
    assert again.offsets("t") == {0: 3}
    mode = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_a_failed_append_stores_nothing(store: DatasetStore) -> None:
    broken = event(9)._replace(value=object())  # type: ignore[arg-type]
    with pytest.raises(sqlite3.Error):
        store.append([event(1), broken], topic="t", next_offsets={0: 2})
    assert store.row_count == 0
    assert store.offsets("t") == {}
    assert store.append([event(1)], topic="t", next_offsets={0: 2}) == 1


def test_snapshot_lineage_and_hash(store: DatasetStore) -> None:
    store.append([event(1, user="a", item="x"), event(2, user="b", item="x", partition=1)],
                 topic="t", next_offsets={0: 2, 1: 3})
    snap = store.snapshot("t")
    assert snap.lineage.row_count == 2
    assert snap.lineage.partition_offsets == {0: 2, 1: 3}
    assert (snap.lineage.user_count, snap.lineage.item_count) == (2, 1)
    assert len(snap.lineage.content_hash) == 64
    assert store.snapshot("t").lineage.content_hash == snap.lineage.content_hash
    store.append([event(3)], topic="t", next_offsets={0: 4})
    assert store.snapshot("t").lineage.content_hash != snap.lineage.content_hash


def test_hash_depends_on_content_not_on_arrival_or_partition(tmp_path: Path) -> None:
    events = [event(n, user=f"u{n % 3}", item=f"i{n % 5}") for n in range(20)]
    one, two = DatasetStore(tmp_path / "a.db"), DatasetStore(tmp_path / "b.db")
    one.append(events, topic="t", next_offsets={0: 20})
    moved = [e._replace(partition=2, offset=99 - i) for i, e in enumerate(events)]
    two.append(list(reversed(moved)), topic="t", next_offsets={2: 100})
    assert one.snapshot("t").lineage.content_hash == two.snapshot("t").lineage.content_hash


def test_empty_snapshot(store: DatasetStore) -> None:
    snap = store.snapshot("t")
    assert snap.lineage.row_count == 0
    data = snap.training_data(DEFAULT_TYPE_WEIGHTS)
    assert len(data) == 0


def test_training_data_weighs_types_values_and_ratings(store: DatasetStore) -> None:
    store.append([
        event(1, user="a", item="x", kind="purchase", value=2.0),  # 5 * quantity 2
        event(2, user="a", item="y", kind="rating", value=2.0),    # 1: the score is no amount
        event(3, user="b", item="x", kind="click"),                # 2
        event(4, user="b", item="z", kind="view", value=0.0),      # weighs nothing: left out
        event(5, user="c", item="z", kind="share"),                # weight 0 by setting
    ], topic="t", next_offsets={0: 6})
    weights = {**DEFAULT_TYPE_WEIGHTS, "share": 0.0}
    data = store.snapshot("t").training_data(weights)
    assert list(data.user_ids) == ["a", "b"]
    assert list(data.item_ids) == ["x", "y"]
    pairs = {(data.user_ids[u], data.item_ids[i]): w
             for u, i, w in zip(data.users, data.items, data.weights, strict=True)}
    assert pairs == {("a", "x"): 10.0, ("a", "y"): 1.0, ("b", "x"): 2.0}
    assert data.users.dtype == np.int64


def test_jobs_are_saved_replaced_and_listed_newest_first(store: DatasetStore) -> None:
    store.save_job("old", created_at=1.0, state="succeeded", body='{"n": 1}')
    store.save_job("new", created_at=2.0, state="queued", body='{"n": 2}')
    store.save_job("new", created_at=2.0, state="running", body='{"n": 3}')
    assert store.load_jobs() == ['{"n": 3}', '{"n": 1}']
    assert store.load_jobs(limit=1) == ['{"n": 3}']
    assert store.load_jobs(states=["running", "queued"]) == ['{"n": 3}']
    assert store.load_job("old") == '{"n": 1}'
    assert store.load_job("missing") is None


def test_nan_never_reaches_the_weights(store: DatasetStore) -> None:
    store.append([event(1, kind="rating")], topic="t", next_offsets={0: 2})
    data = store.snapshot("t").training_data(DEFAULT_TYPE_WEIGHTS)
    assert [float(w) for w in data.weights] == [1.0]
    assert not any(math.isnan(w) for w in data.weights)


def test_ids_are_indexed_in_natural_order_events_in_key_order(store: DatasetStore) -> None:
    events = [event(1, user="10", item="b"), event(2, user="9", item="a"),
              event(3, user="x", item="a"), event(4, user="10", item="10")]
    store.append(events, topic="t", next_offsets={0: 5})
    data = store.snapshot("t").training_data(DEFAULT_TYPE_WEIGHTS)
    assert list(data.user_ids) == ["9", "10", "x"]
    assert list(data.item_ids) == ["10", "a", "b"]
    by_key = sorted(events, key=lambda e: event_key(e.event_id))
    assert [data.user_ids[u] + ":" + data.item_ids[i]
            for u, i in zip(data.users, data.items, strict=True)] == [
        f"{e.user_id}:{e.item_id}" for e in by_key]
    assert [e.event_id for e in by_key] != [e.event_id for e in events]  # the order is tested


Row = tuple[str, str, str, float | None]


def reference_snapshot(path: Path) -> tuple[list[Row], str]:
    """The events (user, item, type, value) in event key order, read row by row, and the
    content hash as `dataset.content_hash` defines it, computed row by row."""
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT event_key, user_id, item_id, type, value, occurred_at_us"
                          " FROM events ORDER BY event_key, seq").fetchall()
    columns = list(zip(*rows, strict=True))

    def natural(value: str) -> tuple[int, int, str]:
        return (0, int(value), value) if value.isdigit() else (1, 0, value)

    digests = [hashlib.sha256(np.array(columns[0], "<i8").tobytes()).digest()]
    for column, dtype in zip(columns[1:4], ("<i4", "<i4", "<i1"), strict=True):
        ids = sorted(set(column), key=natural)
        digests.append(hashlib.sha256("".join(f"{v}\x1f" for v in ids).encode()).digest())
        digests.append(hashlib.sha256(np.array([ids.index(v) for v in column], dtype)
                                      .tobytes()).digest())
    digests.append(hashlib.sha256(np.array(
        [math.nan if v is None else v for v in columns[4]], "<f8").tobytes()).digest())
    digests.append(hashlib.sha256(np.array(columns[5], "<i8").tobytes()).digest())
    events = [(u, i, t, v) for _, u, i, t, v, _ in rows]
    return events, hashlib.sha256(b"".join(digests)).hexdigest()


def snapshot_events(store: DatasetStore) -> list[Row]:
    snap = store.snapshot("t")
    return [(snap.user_ids[u], snap.item_ids[i], snap.type_names[t],
             None if math.isnan(v) else v)
            for u, i, t, v in zip(snap.users, snap.items, snap.types, snap.values, strict=True)]


def many_events() -> list[StoredEvent]:
    kinds = ["view", "rating", "purchase", "click"]
    return [event(n, user=f"{n * 7 % 13}" if n % 3 else f"user-{n % 5}", item=f"i{n % 11}",
                  kind=kinds[n % 4], value=None if n % 4 in (0, 3) else n / 3,
                  offset=n) for n in range(200)]


def test_snapshot_reads_in_chunks_what_a_row_by_row_read_gives(
        store: DatasetStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dataset, "_CHUNK_ROWS", 7)  # many chunks, the last one short
    store.append(many_events()[::-1], topic="t", next_offsets={0: 200})
    events, content_hash = reference_snapshot(store.path)
    snap = store.snapshot("t")
    assert snap.lineage.content_hash == content_hash
    assert snapshot_events(store) == events
    assert snap.lineage.user_count == len({u for u, _, _, _ in events})
    monkeypatch.setattr(dataset, "_CHUNK_ROWS", 1000)  # one chunk: the same hash
    assert store.snapshot("t").lineage.content_hash == content_hash


# The events table before rows were kept in arrival order (keyed by event_id; an earlier
# version without WITHOUT ROWID).
EARLIER_EVENTS = """CREATE TABLE events (event_id TEXT PRIMARY KEY, user_id TEXT NOT NULL,
    item_id TEXT NOT NULL, type TEXT NOT NULL, value REAL, occurred_at_us INTEGER NOT NULL,
    kafka_partition INTEGER NOT NULL, kafka_offset INTEGER NOT NULL)"""


@pytest.mark.parametrize("layout", [EARLIER_EVENTS + " WITHOUT ROWID", EARLIER_EVENTS])
def test_a_store_with_an_earlier_row_layout_is_moved_and_reads_the_same(
        tmp_path: Path, layout: str) -> None:
    earlier = tmp_path / "earlier.sqlite3"
    with closing(sqlite3.connect(earlier)) as db, db:
        db.execute(layout)
        db.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?)", many_events())
    moved, new = DatasetStore(earlier), DatasetStore(tmp_path / "new.sqlite3")
    new.append(many_events(), topic="t", next_offsets={0: 200})
    assert moved.row_count == 200
    assert moved.snapshot("t").lineage.content_hash == new.snapshot("t").lineage.content_hash
    assert snapshot_events(moved) == snapshot_events(new)
    assert moved.append([event(1, offset=300)], topic="t", next_offsets={0: 301}) == 0
    assert moved.append([event(500, offset=301)], topic="t", next_offsets={0: 302}) == 1


def test_an_id_stored_before_reopening_is_not_stored_again(tmp_path: Path) -> None:
    path = tmp_path / "trainer.sqlite3"
    DatasetStore(path).append([event(1), event(2)], topic="t", next_offsets={0: 3})
    again = DatasetStore(path)
    assert again.append([event(2, offset=7), event(3, offset=8)], topic="t",
                        next_offsets={0: 9}) == 1
    assert again.row_count == 3


def test_a_batch_keeps_the_first_record_of_an_id(store: DatasetStore) -> None:
    assert store.append([event(1, item="first"), event(1, item="second", offset=2)],
                        topic="t", next_offsets={0: 3}) == 1
    assert store.snapshot("t").item_ids.tolist() == ["first"]


def test_ids_whose_keys_collide_are_both_stored(store: DatasetStore,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dataset, "event_keys",
                        lambda ids: np.zeros(len(list(ids)), np.int64))  # every key equal
    assert store.append([event(1), event(2)], topic="t", next_offsets={0: 3}) == 2
    assert store.append([event(2, offset=3), event(3, offset=4)], topic="t",
                        next_offsets={0: 5}) == 1
    assert store.row_count == 3


def test_a_re_read_before_the_stored_offsets_adds_nothing_even_after_an_erasure(
        store: DatasetStore) -> None:
    store.append([event(1, user="gone"), event(2, user="kept")], topic="t",
                 next_offsets={0: 3})
    store.delete_user_events("gone", before={0: 3})
    assert store.append([event(1, user="gone"), event(2, user="kept")], topic="t",
                        next_offsets={0: 3}) == 0
    assert store.snapshot("t").lineage.user_count == 1


def test_values_read_back_exactly(store: DatasetStore) -> None:
    values = [1 / 3, 0.1 + 0.2, 1e-300, 123456789.123456789, 2.5]
    store.append([event(n, kind="purchase", value=v) for n, v in enumerate(values)],
                 topic="t", next_offsets={0: 5})
    assert sorted(store.snapshot("t").values.tolist()) == sorted(values)


def test_index_ids_numbers_ids_in_natural_order_as_a_snapshot_does() -> None:
    ids, indices = index_ids(np.array(["10", "b", "2", "10", "a"], dtype=object))
    assert ids.tolist() == ["2", "10", "a", "b"]
    assert indices.tolist() == [1, 3, 0, 1, 2]
