"""The catalogue in the dataset store: rows and offsets written together, deletions, the
snapshot's copy and lineage, and the content hash's byte layout."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest

from services.trainer.dataset import DatasetStore, StoredEvent
from services.trainer.dataset_catalog import CatalogItem, CatalogUser, CatalogWrites
from services.trainer.settings import DEFAULT_TYPE_WEIGHTS


def item(item_id: str, *, categories: tuple[str, ...] = ("books",),
         labels: tuple[str, ...] = ("paper",), hidden: bool = False) -> CatalogItem:
    return CatalogItem(item_id, categories, labels, hidden, None, None, 1_700_000_000_000_000)


def user(user_id: str, *labels: str) -> CatalogUser:
    return CatalogUser(user_id, labels)


def writes(*rows: CatalogItem | CatalogUser) -> CatalogWrites:
    changes = CatalogWrites()
    for row in rows:
        if isinstance(row, CatalogItem):
            changes.items[row.item_id] = row
        else:
            changes.users[row.user_id] = row
    return changes


def test_rows_and_offsets_are_stored_together_and_read_in_id_order(
        store: DatasetStore) -> None:
    store.apply_catalog(writes(item("i2"), item("i1", hidden=True), user("u1", "de")),
                        topic="catalog", next_offsets={0: 3})
    store.apply_catalog(writes(user("u0")), topic="catalog", next_offsets={0: 2, 1: 1})
    snap = store.snapshot("t", catalog_topic="catalog")
    assert snap.catalog.items == (item("i1", hidden=True), item("i2"))
    assert snap.catalog.users == (user("u0"), user("u1", "de"))
    assert store.offsets("catalog") == {0: 3, 1: 1}  # never backwards
    lineage = snap.lineage
    assert (lineage.catalog_topic, lineage.catalog_offsets) == ("catalog", {0: 3, 1: 1})
    assert (lineage.catalog_item_count, lineage.catalog_user_count) == (2, 2)
    assert lineage.catalog_content_hash == snap.catalog.content_hash


def test_an_upsert_replaces_and_none_deletes(store: DatasetStore) -> None:
    store.apply_catalog(writes(item("i1"), item("i2"), user("u1", "de")),
                        topic="catalog", next_offsets={0: 3})
    changes = writes(item("i1", categories=("music",)))
    changes.items["i2"] = None
    changes.users["u1"] = None
    store.apply_catalog(changes, topic="catalog", next_offsets={0: 6})
    catalog = store.snapshot("t").catalog
    assert catalog.items == (item("i1", categories=("music",)),)
    assert catalog.users == ()


def test_a_failed_write_stores_neither_rows_nor_offsets(store: DatasetStore) -> None:
    broken = item("i2")._replace(updated_at_us=object())  # type: ignore[arg-type]
    with pytest.raises(sqlite3.Error):
        store.apply_catalog(writes(item("i1"), broken), topic="catalog", next_offsets={0: 2})
    assert store.snapshot("t").catalog.items == ()
    assert store.offsets("catalog") == {}


def test_the_catalogue_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "trainer.sqlite3"
    first = DatasetStore(path)
    first.apply_catalog(writes(item("i1"), user("u1")), topic="catalog", next_offsets={0: 2})
    first.close()
    again = DatasetStore(path)
    assert again.snapshot("t").catalog.items == (item("i1"),)
    assert again.offsets("catalog") == {0: 2}


def test_a_hidden_items_events_stay_in_the_training_data(store: DatasetStore) -> None:
    store.append([StoredEvent("e1", "u1", "i1", "view", None, 1, 0, 0)], topic="t",
                 next_offsets={0: 1})
    store.apply_catalog(writes(item("i1", hidden=True)), topic="catalog", next_offsets={0: 1})
    snap = store.snapshot("t", catalog_topic="catalog")
    assert snap.catalog.items == (item("i1", hidden=True),)
    assert snap.training_data(DEFAULT_TYPE_WEIGHTS).item_ids.tolist() == ["i1"]


def test_the_hash_depends_on_content_only(tmp_path: Path) -> None:
    def content_hash(name: str, *batches: CatalogWrites) -> str:
        store = DatasetStore(tmp_path / name)
        for partition, changes in enumerate(batches):
            store.apply_catalog(changes, topic="catalog", next_offsets={partition: 9})
        return store.snapshot("t").catalog.content_hash

    rows = (item("i1"), item("i2"), user("u1", "de"))
    first = content_hash("first", writes(*rows))
    assert content_hash("again", writes(user("u1", "de"), item("i2")), writes(item("i1"))) == first
    changed = [(item("i1", hidden=True), *rows[1:]), (item("i1", labels=("x", "paper")), *rows[1:]),
               (item("i1", categories=()), *rows[1:]), (*rows[:2], user("u1")),
               (*rows, user("u2")), rows[1:]]
    hashes = {content_hash(f"changed{n}", writes(*change)) for n, change in enumerate(changed)}
    assert len(hashes) == len(changed) and first not in hashes


def test_the_hash_byte_layout(store: DatasetStore) -> None:
    store.apply_catalog(writes(
        CatalogItem("b", ("Bücher",), ("x", "a"), True, 5, None, 7),
        CatalogItem("a", (), (), False, None, 9, None), user("u", "fr")),
        topic="catalog", next_offsets={0: 3})
    expected = ('["item","a",[],[],false,null,9,null]\n'
                '["item","b",["Bücher"],["x","a"],true,5,null,7]\n'
                '["user","u",["fr"]]\n').encode()
    assert store.snapshot("t").catalog.content_hash == hashlib.sha256(expected).hexdigest()


def test_an_empty_catalogue(store: DatasetStore) -> None:
    lineage = store.snapshot("t", catalog_topic="catalog").lineage
    assert (lineage.catalog_item_count, lineage.catalog_user_count) == (0, 0)
    assert lineage.catalog_offsets == {}
    assert lineage.catalog_content_hash == hashlib.sha256(b"").hexdigest()
