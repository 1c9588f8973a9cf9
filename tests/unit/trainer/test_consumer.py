from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from recsys.events.v1 import interaction_pb2
from services.trainer.consumer import decode
from services.trainer.settings import INTERACTION_TYPES


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


def test_a_valid_event_is_stored_with_its_position() -> None:
    stored = decode(interaction(value=2.0), partition=3, offset=42)
    assert stored is not None
    assert (stored.event_id, stored.user_id, stored.item_id) == ("e1", "u1", "i1")
    assert stored.type == "add_to_cart"
    assert stored.value == 2.0
    assert stored.occurred_at_us == 1_700_000_000_000_005
    assert (stored.partition, stored.offset) == (3, 42)


def test_an_absent_value_stays_absent() -> None:
    stored = decode(interaction(), partition=0, offset=0)
    assert stored is not None and stored.value is None


def test_every_contract_type_has_a_weight_name() -> None:
    names = {
        decode(interaction(type=t), partition=0, offset=0).type  # type: ignore[union-attr]
        for t in interaction_pb2.InteractionType.values()
        if t != interaction_pb2.INTERACTION_TYPE_UNSPECIFIED
    }
    assert names == set(INTERACTION_TYPES)


def test_what_cannot_be_trained_on_is_skipped() -> None:
    assert decode(b"\xff\xff\xff", partition=0, offset=0) is None
    assert decode(None, partition=0, offset=0) is None
    assert decode(interaction(event_id=""), partition=0, offset=0) is None
    assert decode(interaction(user_id=""), partition=0, offset=0) is None
    assert decode(interaction(type=0), partition=0, offset=0) is None
    assert decode(interaction(occurred_at=None), partition=0, offset=0) is None
