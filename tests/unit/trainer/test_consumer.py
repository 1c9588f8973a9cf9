from __future__ import annotations

import gc
from pathlib import Path

from google.protobuf.timestamp_pb2 import Timestamp
from prometheus_client import CollectorRegistry

from recsys.events.v1 import interaction_pb2
from services.core.consumer import Batch, Record, decode
from services.trainer.consumer import DatasetAppender, stored_event, tune_garbage_collector
from services.trainer.dataset import DatasetStore, StoredEvent
from services.trainer.metrics import TrainerMetrics
from services.trainer.settings import INTERACTION_TYPES, TrainerSettings


def interaction(**fields: object) -> bytes:
    event = interaction_pb2.Interaction(
        event_id="e1", user_id="u1", item_id="i1",
        type=interaction_pb2.INTERACTION_TYPE_ADD_TO_CART,
        occurred_at=Timestamp(seconds=1_700_000_000, nanos=5_000),
    )
    for name, value in fields.items():
        if value is None:
            event.ClearField(name)
        else:
            setattr(event, name, value)
    return event.SerializeToString()


def as_stored(value: bytes | None, *, partition: int = 0, offset: int = 0) -> StoredEvent | None:
    """What the trainer stores of a record with this value, decoded as the consumer loop does."""
    return stored_event(Record(partition, offset, decode(interaction_pb2.Interaction, value)))


def test_a_valid_event_is_stored_with_its_position() -> None:
    stored = as_stored(interaction(value=2.0), partition=3, offset=42)
    assert stored is not None
    assert (stored.event_id, stored.user_id, stored.item_id) == ("e1", "u1", "i1")
    assert stored.type == "add_to_cart"
    assert stored.value == 2.0
    assert stored.occurred_at_us == 1_700_000_000_000_005
    assert (stored.partition, stored.offset) == (3, 42)


def test_an_absent_value_stays_absent() -> None:
    stored = as_stored(interaction())
    assert stored is not None and stored.value is None


def test_every_contract_type_has_a_weight_name() -> None:
    names = {
        as_stored(interaction(type=t)).type  # type: ignore[union-attr]
        for t in interaction_pb2.InteractionType.values()
        if t != interaction_pb2.INTERACTION_TYPE_UNSPECIFIED
    }
    assert names == set(INTERACTION_TYPES)


def test_what_cannot_be_trained_on_is_skipped() -> None:
    assert as_stored(b"\xff\xff\xff") is None
    assert as_stored(None) is None
    assert as_stored(interaction(event_id="")) is None
    assert as_stored(interaction(user_id="")) is None
    assert as_stored(interaction(type=0)) is None
    assert as_stored(interaction(occurred_at=None)) is None


def test_a_batch_is_stored_with_its_next_offsets_and_invalid_events_counted(
        tmp_path: Path) -> None:
    store = DatasetStore(tmp_path / "trainer.sqlite3")
    registry = CollectorRegistry()
    append = DatasetAppender(store, TrainerMetrics.create(registry), topic="t")
    values = [interaction(event_id="e1"), b"\xff\xff\xff", interaction(event_id="e2"),
              interaction(event_id="e1")]
    append(Batch([Record(p, o, decode(interaction_pb2.Interaction, v))
                  for (p, o), v in zip([(0, 7), (0, 8), (1, 3), (1, 4)], values, strict=True)]))
    assert store.row_count == 2
    assert store.offsets("t") == {0: 9, 1: 5}

    def consumed(result: str) -> float | None:
        return registry.get_sample_value("recsys_trainer_events_consumed_total",
                                         {"result": result})

    assert (consumed("stored"), consumed("duplicate"), consumed("invalid")) == (2, 1, 1)
    assert registry.get_sample_value("recsys_trainer_dataset_rows") == 2
    store.close()


def test_the_trainer_collects_young_objects_once_a_batch_not_every_700() -> None:
    before = gc.get_threshold()
    try:
        tune_garbage_collector()
        assert gc.get_threshold()[0] >= TrainerSettings().consumer_batch
    finally:
        gc.set_threshold(*before)
