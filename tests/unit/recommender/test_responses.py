"""ResponseWriter's wire bytes against RecommendResponse built field by field by protobuf."""

from __future__ import annotations

import pytest
from google.protobuf.descriptor import FieldDescriptor

from recsys.recommender.v1 import recommender_pb2
from services.recommender.responses import ResponseWriter

LONG_ID = "é" * 128  # 256 bytes: two-byte lengths, for the id and for its ScoredItem


def built(version: str, strategy: recommender_pb2.Strategy.ValueType,
          items: list[tuple[str, float]], cold_start: set[str]
          ) -> recommender_pb2.RecommendResponse:
    return recommender_pb2.RecommendResponse(
        model_version=version, strategy=strategy,
        items=[recommender_pb2.ScoredItem(item_id=item, score=score,
                                          cold_start=item in cold_start)
               for item, score in items])


@pytest.mark.parametrize("strategy", recommender_pb2.Strategy.values())
@pytest.mark.parametrize("version", ["1", "12345", "v" * 300])
def test_written_responses_equal_built_ones(version: str,
                                            strategy: recommender_pb2.Strategy.ValueType
                                            ) -> None:
    writer = ResponseWriter(version, ["i1", "i2", "ünï", LONG_ID, "i 5"])
    items = [("i2", 3.5), (LONG_ID, 0.0), ("ünï", -1e-30), ("new", 1e300), ("i1", -2.25),
             ("i 5", float("-0.0"))]
    for cold_start in ({"new"}, {"new", "i1"}):  # the writer's unknown items among them
        written = writer.recommend(strategy, items, cold_start)
        assert written == built(version, strategy, items, cold_start)
        assert [item.cold_start for item in written.items] == [
            item in cold_start for item, _ in items]
    known = [item for item in items if item[0] != "new"]
    assert writer.recommend(strategy, known, set()) == built(version, strategy, known, set())
    assert writer.recommend(strategy, [], set()) == built(version, strategy, [], set())


def test_the_writer_knows_every_field_of_the_messages_it_writes() -> None:
    """A field added to either message would be left out of written answers: the writer must
    learn it first."""
    def fields(message: type[recommender_pb2.RecommendResponse] | type[
            recommender_pb2.ScoredItem]) -> dict[str, tuple[int, int]]:
        return {f.name: (f.number, f.type) for f in message.DESCRIPTOR.fields}

    assert fields(recommender_pb2.RecommendResponse) == {
        "items": (1, FieldDescriptor.TYPE_MESSAGE),
        "model_version": (2, FieldDescriptor.TYPE_STRING),
        "strategy": (3, FieldDescriptor.TYPE_ENUM)}
    assert fields(recommender_pb2.ScoredItem) == {
        "item_id": (1, FieldDescriptor.TYPE_STRING), "score": (2, FieldDescriptor.TYPE_DOUBLE),
        "cold_start": (3, FieldDescriptor.TYPE_BOOL)}
    assert max(recommender_pb2.Strategy.values()) < 0x80  # one varint byte each
