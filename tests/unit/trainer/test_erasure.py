"""The dataset eraser on a real store: an erasure waits for the events it covers, deletes only
them, and the positions it reports for the lineage never pass an erasure not yet applied."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from recsys.events.v1.catalog_pb2 import CatalogChange, Item, UserErasure
from services.core.consumer import Batch, Record
from services.trainer.dataset import DatasetStore, StoredEvent
from services.trainer.erasure import DatasetEraser, ErasurePending
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
    eraser = DatasetEraser(store, topic="t", metrics=metrics)
    batch = Batch([
        Record(0, 0, CatalogChange(item=Item(item_id="i1"))),
        Record(0, 1, CatalogChange(user_erasure=UserErasure(
            user_id="gone", requested_by="ops", interaction_offsets={0: 4}))),
    ])
    with pytest.raises(ErasurePending):  # event 3 is covered but not stored yet
        eraser(batch)
    assert store.row_count == 3
    assert eraser.applied_through() == {0: 1}  # not past the pending erasure

    store.append([event(3, "gone"), event(4, "gone")], topic="t", next_offsets={0: 5})
    eraser(batch)  # the consumer loop hands the same batch again
    assert sorted(store.snapshot("t").user_ids.tolist()) == ["gone", "kept"]  # e4 is later
    assert eraser.applied_through() == {0: 2}
    assert registry.get_sample_value("recsys_trainer_erasures_total") == 1
