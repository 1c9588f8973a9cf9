"""The catalogue core on the real Publisher (kafka-python's producer faked): what it publishes,
what it completes from its view of the topic, what it refuses, and how it reads."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping

import pytest
from google.rpc import error_details_pb2
from prometheus_client import CollectorRegistry

from recsys.events.v1.catalog_pb2 import CatalogChange, Item, User, UserErasure
from services.core.catalog import AUDIT_LOG, CatalogView, audit_id
from services.core.consumer import Record
from services.core.errors import InvalidArgument, NotFound, Unavailable
from services.ingest.catalog import Catalog
from services.ingest.catalog_rules import item_problem
from services.ingest.metrics import IngestMetrics
from services.ingest.publisher import Publisher
from tests.support.events import NOW
from tests.support.fake_producer import FakeProducer

ENDS = {0: 12, 1: 7}


@pytest.fixture
def view() -> CatalogView:
    return CatalogView()


@pytest.fixture
def make_catalog(publisher: Publisher, view: CatalogView, registry: CollectorRegistry
                 ) -> Callable[..., Catalog]:
    metrics = IngestMetrics.create(registry)

    def make(*, ready: bool = True,
             ends: Callable[[], Mapping[int, int]] = lambda: ENDS) -> Catalog:
        return Catalog(publisher=publisher, view=view, view_ready=lambda: ready,
                       metrics=metrics, max_batch=3, ack_timeout_s=5.0,
                       interaction_ends=ends, clock=lambda: NOW)

    return make


@pytest.fixture
def catalog(make_catalog: Callable[..., Catalog]) -> Catalog:
    return make_catalog()


def published(producer: FakeProducer) -> list[tuple[bytes, CatalogChange]]:
    return [(r.key, CatalogChange.FromString(r.value)) for r in producer.records]


def seen(view: CatalogView, producer: FakeProducer) -> None:
    """The view reads what was published, as the server's follower does."""
    view.apply(Record(0, n, CatalogChange.FromString(r.value))
               for n, r in enumerate(producer.records))


def changes(registry: CollectorRegistry, change: str, outcome: str) -> float | None:
    return registry.get_sample_value("recsys_ingest_catalog_changes_total",
                                     {"change": change, "outcome": outcome})


async def test_valid_items_are_published_whole_keyed_by_id_and_invalid_ones_returned(
        catalog: Catalog, producer: FakeProducer, registry: CollectorRegistry) -> None:
    result = await catalog.upsert_items([
        Item(item_id="i1", categories=["books"], labels=["author:x"], title="One"),
        Item(item_id="", categories=["books"]),
        Item(item_id="i3", categories=["c"] * 17),
    ])
    assert result.accepted == 1
    assert [(r.index, r.field) for r in result.rejections] == [(1, "item_id"), (2, "categories")]
    [(key, change)] = published(producer)
    assert key == b"item:i1"
    assert change.item.categories == ["books"] and change.item.title == "One"
    assert change.item.HasField("hidden") and not change.item.hidden
    assert change.item.updated_at.seconds == int(NOW)  # filled in when absent
    assert changes(registry, "item", "accepted") == 1
    assert changes(registry, "item", "rejected") == 2


async def test_an_upsert_without_the_flag_keeps_an_item_hidden_and_one_with_it_decides(
        catalog: Catalog, producer: FakeProducer, view: CatalogView) -> None:
    await catalog.set_hidden("i1", True)
    seen(view, producer)
    await catalog.upsert_items([Item(item_id="i1", categories=["books"])])
    assert published(producer)[-1][1].item.hidden
    seen(view, producer)
    await catalog.upsert_items([Item(item_id="i1", categories=["books"], hidden=False)])
    assert not published(producer)[-1][1].item.hidden


async def test_all_or_nothing_refuses_the_batch_naming_each_bad_item(
        catalog: Catalog, producer: FakeProducer) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await catalog.upsert_items([Item(item_id="i1"), Item(item_id="i2", labels=[""]),
                                    Item(item_id="i\n3")], all_or_nothing=True)
    assert caught.value.field == "items[1].labels"
    assert caught.value.message.endswith("(and 1 more invalid items)")
    assert isinstance(caught.value.details, error_details_pb2.BadRequest)
    assert [v.field for v in caught.value.details.field_violations] == [
        "items[1].labels", "items[2].item_id"]
    assert producer.records == []


@pytest.mark.parametrize("count", [0, 4])
async def test_a_batch_holds_one_to_the_limit(catalog: Catalog, count: int) -> None:
    with pytest.raises(InvalidArgument, match="must hold 1 to 3 entries") as caught:
        await catalog.upsert_items([Item(item_id=f"i{n}") for n in range(count)])
    assert caught.value.field == "items"


async def test_hiding_keeps_what_the_catalogue_says_of_the_item_and_works_for_any_id(
        catalog: Catalog, producer: FakeProducer, view: CatalogView) -> None:
    await catalog.upsert_items([Item(item_id="i1", categories=["books"], title="One")])
    seen(view, producer)
    hidden = await catalog.set_hidden("i1", True)
    assert (hidden.hidden, list(hidden.categories), hidden.title) == (True, ["books"], "One")
    seen(view, producer)
    bare = await catalog.set_hidden("only-in-the-model", True)
    assert bare == published(producer)[-1][1].item
    assert (bare.item_id, bare.hidden, list(bare.categories)) == ("only-in-the-model", True, [])
    seen(view, producer)
    shown = await catalog.set_hidden("i1", False)
    assert not shown.hidden and shown.categories == ["books"]


async def test_a_change_completed_from_the_view_waits_for_this_servers_own_writes(
        catalog: Catalog, producer: FakeProducer, view: CatalogView) -> None:
    await catalog.upsert_items([Item(item_id="i1", categories=["books"])])
    hiding = asyncio.ensure_future(catalog.set_hidden("i1", True))
    await asyncio.sleep(0)  # the hide runs up to its first wait: the view is still empty
    seen(view, producer)
    assert (await hiding).categories == ["books"]  # completed from the upsert, not from ""


async def test_a_deletion_is_published_for_any_id(catalog: Catalog,
                                                  producer: FakeProducer) -> None:
    await catalog.delete_item("i9")
    assert published(producer) == [(b"item:i9", CatalogChange(deleted_item_id="i9"))]
    with pytest.raises(InvalidArgument) as caught:
        await catalog.delete_item("")
    assert caught.value.field == "item_id"


async def test_reads_come_from_the_view_a_page_at_a_time(
        catalog: Catalog, producer: FakeProducer, view: CatalogView) -> None:
    for n in range(3):
        await catalog.upsert_items([Item(item_id=f"i{n}", categories=["even" if n % 2 == 0
                                                                      else "odd"])])
        seen(view, producer)
    assert catalog.get_item("i1").categories == ["odd"]
    with pytest.raises(NotFound):
        catalog.get_item("i7")
    first, token = catalog.list_items(page_size=2, page_token="", category="")
    assert [i.item_id for i in first] == ["i0", "i1"] and token
    rest, last = catalog.list_items(page_size=2, page_token=token, category="")
    assert ([i.item_id for i in rest], last) == (["i2"], "")
    evens, _ = catalog.list_items(page_size=0, page_token="", category="even")
    assert [i.item_id for i in evens] == ["i0", "i2"]


@pytest.mark.parametrize(("fields", "field"), [
    ({"page_size": 1001}, "page_size"), ({"page_size": -1}, "page_size"),
    ({"page_token": "%%%"}, "page_token"),
])
def test_a_bad_page_request_names_its_field(catalog: Catalog, fields: dict[str, object],
                                            field: str) -> None:
    request: dict[str, object] = {"page_size": 10, "page_token": "", "category": ""}
    with pytest.raises(InvalidArgument) as caught:
        catalog.list_items(**{**request, **fields})  # type: ignore[arg-type]
    assert caught.value.field == field


async def test_nothing_is_read_or_completed_before_the_view_has_read_the_topic(
        make_catalog: Callable[..., Catalog], producer: FakeProducer) -> None:
    catalog = make_catalog(ready=False)
    with pytest.raises(Unavailable, match="still reading"):
        catalog.get_item("i1")
    with pytest.raises(Unavailable, match="still reading"):
        await catalog.set_hidden("i1", True)
    assert producer.records == []


async def test_without_the_broker_nothing_is_published_and_the_failure_is_counted(
        catalog: Catalog, publisher: Publisher, registry: CollectorRegistry) -> None:
    publisher._reachable = False
    with pytest.raises(Unavailable, match="unreachable"):
        await catalog.set_hidden("i1", True)
    assert changes(registry, "hide", "failed") == 1


async def test_an_unacknowledged_change_fails_and_says_a_retry_is_safe(
        catalog: Catalog, producer: FakeProducer) -> None:
    producer.auto_ack = False
    with pytest.raises(Unavailable, match="publishing them again is safe") as caught:
        await catalog.delete_item("i1", time_left=0.1)
    assert caught.value.retryable


async def test_an_erasure_covers_what_the_interactions_topic_held_and_is_audited(
        catalog: Catalog, producer: FakeProducer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=AUDIT_LOG)
    accepted = await catalog.erase_user("u1", requested_by="ticket-42")
    [(key, change)] = published(producer)
    assert key == b"user:u1"
    erasure = change.user_erasure
    assert (erasure.user_id, erasure.requested_by) == ("u1", "ticket-42")
    assert dict(erasure.interaction_offsets) == ENDS
    assert accepted == erasure.requested_at and accepted.seconds == int(NOW)
    [line] = [r for r in caplog.records if r.name == AUDIT_LOG]
    assert line.__dict__["user"] == audit_id("u1") and line.__dict__["requested_by"] == "ticket-42"
    assert "u1" not in line.getMessage()


@pytest.mark.parametrize(("user_id", "requested_by", "field"), [
    ("", "ticket-42", "user_id"), ("u1", "", "requested_by"), ("u1", "x" * 129, "requested_by"),
])
async def test_a_bad_erasure_request_names_its_field(
        catalog: Catalog, user_id: str, requested_by: str, field: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await catalog.erase_user(user_id, requested_by=requested_by)
    assert caught.value.field == field


async def test_an_erasure_that_cannot_read_the_topics_end_erases_nothing(
        make_catalog: Callable[..., Catalog], producer: FakeProducer) -> None:
    def unreachable() -> Mapping[int, int]:
        raise TimeoutError("no fetch answer")

    with pytest.raises(Unavailable, match="nothing was erased"):
        await make_catalog(ends=unreachable).erase_user("u1", requested_by="ops")
    assert producer.records == []


async def test_a_profile_carries_the_users_last_erasure(
        catalog: Catalog, producer: FakeProducer, view: CatalogView) -> None:
    await catalog.erase_user("u1", requested_by="ops")
    seen(view, producer)
    result = await catalog.upsert_users([User(user_id="u1", labels=["de"]),
                                         User(user_id="u2", labels=["x" * 129])])
    assert result.accepted == 1 and [r.field for r in result.rejections] == ["labels"]
    user = published(producer)[-1][1].user
    assert user.labels == ["de"] and user.erasure.requested_by == "ops"
    assert user.updated_at.seconds == int(NOW)


@pytest.mark.parametrize(("item", "field"), [
    (Item(item_id="i1", title="t" * 257), "title"),
    (Item(item_id="i1", title="two\nlines"), "title"),
    (Item(item_id="i1", labels=["a"] * 65), "labels"),
])
def test_each_item_rule_names_its_field(item: Item, field: str) -> None:
    problem = item_problem(item)
    assert problem is not None and problem.field == field


def test_an_availability_window_must_end_after_it_starts() -> None:
    item = Item(item_id="i1")
    item.available_from.seconds, item.available_until.seconds = 200, 200
    assert item_problem(item) == ("available_until", "must be after available_from")
    item.available_until.seconds = 201
    assert item_problem(item) is None
    item.updated_at.nanos = -1
    assert item_problem(item) == ("updated_at", "nanos must be 0 to 999,999,999")


def test_an_erasure_mark_is_what_a_view_read(view: CatalogView) -> None:
    view.apply([Record(0, 0, CatalogChange(user_erasure=UserErasure(user_id="u1")))])
    assert view.erasures["u1"].message.user_id == "u1"
