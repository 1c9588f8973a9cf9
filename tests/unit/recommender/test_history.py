"""Reading Interaction records off the topic."""

from __future__ import annotations

from recsys.events.v1 import interaction_pb2
from services.recommender.history import parse


def test_an_interaction_gives_its_user_and_item() -> None:
    event = interaction_pb2.Interaction(user_id="u1", item_id="i9",
                                        type=interaction_pb2.INTERACTION_TYPE_CLICK)
    assert parse(event.SerializeToString()) == ("u1", "i9")


def test_records_that_are_not_interactions_are_skipped() -> None:
    assert parse(b"\xff\xff not protobuf") is None
    assert parse(None) is None
    assert parse(interaction_pb2.Interaction(user_id="u1").SerializeToString()) is None
