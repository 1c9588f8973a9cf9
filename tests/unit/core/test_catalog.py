"""The catalogue view: records folded in topic order, the last of a key winning."""

from __future__ import annotations

import pytest

from recsys.events.v1.catalog_pb2 import CatalogChange, Item, User, UserErasure
from services.core.catalog import CatalogView, available, record_key, window_bounds
from services.core.consumer import Record


def records(*changes: CatalogChange | None, partition: int = 0,
            first: int = 0) -> list[Record[CatalogChange]]:
    return [Record(partition, first + n, change) for n, change in enumerate(changes)]


def item(item_id: str, *categories: str, hidden: bool = False) -> CatalogChange:
    return CatalogChange(item=Item(item_id=item_id, categories=categories, hidden=hidden))


def test_the_last_record_of_an_item_wins_and_a_deletion_removes_it() -> None:
    view = CatalogView()
    changes = view.apply(records(item("i1", "books"), item("i2"), item("i1", "music")))
    assert changes.items == {"i1", "i2"} and not changes.users
    assert list(view.items["i1"].categories) == ["music"]
    view.apply(records(CatalogChange(deleted_item_id="i1"), first=3))
    assert "i1" not in view.items and view.deleted == {"i1"}
    view.apply(records(item("i1", "film"), first=4))
    assert "i1" in view.items and not view.deleted


def test_positions_name_what_was_read_whatever_the_records_held() -> None:
    view = CatalogView()
    view.apply(records(item("i1"), None, partition=1, first=5))  # None: did not decode
    view.apply(records(CatalogChange(), partition=0))  # an empty change counts too
    assert view.positions == {0: 1, 1: 7}
    assert view.version == "0:1,1:7"
    assert CatalogView().version == ""


def test_an_erasure_drops_the_profile_and_is_remembered_with_its_place() -> None:
    view = CatalogView()
    view.apply(records(CatalogChange(user=User(user_id="u1", labels=["de"]))))
    changes = view.apply(records(CatalogChange(user_erasure=UserErasure(
        user_id="u1", interaction_offsets={0: 10, 2: 4})), partition=1, first=3))
    assert changes.users == {"u1"}
    assert "u1" not in view.users
    erasure = view.erasures["u1"]
    assert (erasure.partition, erasure.offset) == (1, 3)
    assert erasure.covers(0, 9) and not erasure.covers(0, 10)
    assert erasure.covers(2, 3) and not erasure.covers(1, 0)  # nothing on partition 1


def test_a_profile_that_carries_an_erasure_stands_in_for_a_compacted_erasure_record() -> None:
    carried = User(user_id="u1", labels=["fr"],
                   erasure=UserErasure(user_id="u1", interaction_offsets={0: 10}))
    view = CatalogView()
    view.apply(records(CatalogChange(user=carried), first=8))
    assert view.users["u1"].labels == ["fr"]
    assert (view.erasures["u1"].offset, view.erasures["u1"].covers(0, 9)) == (8, True)
    # Where the erasure record itself was read, it keeps its own (earlier) place.
    view = CatalogView()
    view.apply(records(CatalogChange(user_erasure=carried.erasure), CatalogChange(user=carried)))
    assert view.erasures["u1"].offset == 0


@pytest.mark.parametrize(("change", "key"), [
    (item("a:b"), b"item:a:b"),
    (CatalogChange(deleted_item_id="i1"), b"item:i1"),
    (CatalogChange(user=User(user_id="u1")), b"user:u1"),
    (CatalogChange(user_erasure=UserErasure(user_id="u1")), b"user:u1"),
])
def test_each_change_is_keyed_by_its_item_or_user(change: CatalogChange, key: bytes) -> None:
    assert record_key(change) == key


def test_an_empty_change_has_no_key() -> None:
    with pytest.raises(ValueError, match="empty"):
        record_key(CatalogChange())


def test_an_item_is_available_unless_hidden_or_outside_its_window() -> None:
    windowed = Item(item_id="i1")
    windowed.available_from.seconds = 100
    windowed.available_until.seconds = 200
    assert [available(windowed, t) for t in (99.9, 100, 199.9, 200)] == [
        False, True, True, False]
    assert window_bounds(windowed) == (100.0, 200.0)
    assert available(Item(item_id="i2"), 0) and window_bounds(Item(item_id="i2")) == ()
    assert not available(Item(item_id="i3", hidden=True), 150)


def test_records_read_again_after_a_reconnection_change_nothing() -> None:
    view = CatalogView()
    view.apply(records(item("i1"), item("i1", hidden=True)))
    replayed = view.apply(records(item("i1"), item("i1", hidden=True)))
    assert not replayed
    assert view.items["i1"].hidden and view.version == "0:2"
