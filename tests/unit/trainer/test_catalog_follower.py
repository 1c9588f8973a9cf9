"""The catalogue follower on a real store: the catalogue's rows follow the topic (last write
wins, deletes, erasures, replays from the start change nothing); an erasure waits for the events
it covers, deletes only them, and the catalogue offsets stored (the lineage's) never pass an
erasure not yet applied."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from prometheus_client import CollectorRegistry

from recsys.events.v1.catalog_pb2 import CatalogChange, Item, User, UserErasure
from services.core.consumer import Batch, Record
from services.trainer.catalog_follower import CatalogFollower, ErasurePending
from services.trainer.dataset import DatasetStore, StoredEvent
from services.trainer.dataset_catalog import CatalogItem, CatalogUser
from services.trainer.metrics import TrainerMetrics


def event(n: int, user: str) -> StoredEvent:
    return StoredEvent(event_id=f"e{n}", user_id=user, item_id="i1", type="view", value=None,
                       occurred_at_us=1_700_000_000_000_000 + n, partition=0, offset=n)


def test_an_erasure_waits_for_its_events_then_deletes_only_them(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    metrics = TrainerMetrics.create(registry)
    store = DatasetStore(tmp_path / "trainer.sqlite3")
    store.append([event(0, "gone"), event(1, "kept"), event(2, "gone")], topic="t",
                 next_offsets={0: 3})
    eraser = CatalogFollower(store, topic="t", catalog_topic="catalog", metrics=metrics)
    batch = Batch([
        Record(0, 0, CatalogChange(item=Item(item_id="i1"))),
        Record(0, 1, CatalogChange(user_erasure=UserErasure(
            user_id="gone", requested_by="ops", interaction_offsets={0: 4}))),
    ])
    with pytest.raises(ErasurePending):  # event 3 is covered but not stored yet
        eraser(batch)
    assert store.row_count == 3
    assert store.offsets("catalog") == {0: 1}  # not past the pending erasure
    assert [i.item_id for i in store.snapshot("t").catalog.items] == ["i1"]

    store.append([event(3, "gone"), event(4, "gone")], topic="t", next_offsets={0: 5})
    eraser(batch)  # the consumer loop hands the same batch again
    assert sorted(store.snapshot("t").user_ids.tolist()) == ["gone", "kept"]  # e4 is later
    assert store.offsets("catalog") == {0: 2}
    assert registry.get_sample_value("recsys_trainer_erasures_total") == 1


def batch(*changes: tuple[int, CatalogChange | None], partition: int = 0) -> Batch[CatalogChange]:
    return Batch([Record(partition, offset, change) for offset, change in changes])


def follower(store: DatasetStore) -> CatalogFollower:
    return CatalogFollower(store, topic="t", catalog_topic="catalog",
                           metrics=TrainerMetrics.create(CollectorRegistry()))


def books(item_id: str, *, hidden: bool = False) -> CatalogChange:
    return CatalogChange(item=Item(item_id=item_id, categories=["books"], labels=["paper"],
                                   hidden=hidden, available_until=Timestamp(seconds=2),
                                   updated_at=Timestamp(seconds=1, nanos=5000)))


def test_the_catalogue_follows_the_topic_and_a_replay_changes_nothing(tmp_path: Path) -> None:
    store = DatasetStore(tmp_path / "trainer.sqlite3")
    topic = [
        batch((0, books("i1")), (1, CatalogChange(user=User(user_id="u1", labels=["de"]))),
              (2, books("i2")), (3, CatalogChange(item=Item(item_id="i1", categories=["music"])))),
        batch((4, books("i2", hidden=True)), (5, CatalogChange(deleted_item_id="i3")),
              (6, None), (7, books("i4")), (8, CatalogChange(deleted_item_id="i4")),
              (9, CatalogChange(user=User(user_id="gone", labels=["fr"]))),
              (10, CatalogChange(user_erasure=UserErasure(user_id="gone")))),
    ]
    first = follower(store)
    for records in topic:
        first(records)
    snap = store.snapshot("t", catalog_topic="catalog")
    assert snap.catalog.items == (
        CatalogItem("i1", ("music",), (), False, None, None, None),  # the last write won
        CatalogItem("i2", ("books",), ("paper",), True, None, 2_000_000, 1_000_005))
    assert snap.catalog.users == (CatalogUser("u1", ("de",)),)  # "gone" erased
    assert snap.lineage.catalog_offsets == {0: 11}

    restarted = follower(store)  # a restarted trainer reads the topic from its start again
    restarted(topic[0])
    assert store.snapshot("t", catalog_topic="catalog").lineage == snap.lineage
    restarted(topic[1])
    assert store.snapshot("t", catalog_topic="catalog").lineage == snap.lineage
    restarted(batch((11, books("i3"))))
    assert store.snapshot("t").catalog.items[2].item_id == "i3"
