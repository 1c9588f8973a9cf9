"""CatalogService on the ingest server against a real broker: what lands on the catalogue topic,
what the server reads back from it, and what it refuses, over gRPC."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_status import rpc_status

from recsys.catalog.v1 import catalog_pb2
from recsys.events.v1.catalog_pb2 import CatalogChange, Item, User
from scripts.localstack.components import TansuBroker
from services.ingest.catalog_servicer import SERVICE as CATALOG_SERVICE
from tests.support.ingest_server import SERVING, Ingest, start_ingest
from tests.support.polling import eventually_async
from tests.support.topics import read_topic

pytestmark = pytest.mark.integration


@pytest.fixture
async def ingest(kafka: TansuBroker) -> AsyncIterator[Ingest]:
    """An ingest server with topics of its own, once its catalogue is SERVING."""
    running = await start_ingest(kafka.bootstrap)
    await running.wait_health(SERVING, CATALOG_SERVICE)
    yield running
    await running.stop()


async def item_once(ingest: Ingest, item_id: str, *, hidden: bool) -> Item:
    """GetItem until the server's view holds `item_id` with the flag `hidden`."""
    async def get() -> Item | None:
        reply = await ingest.catalog.GetItem(catalog_pb2.GetItemRequest(item_id=item_id),
                                             timeout=5)
        return reply.item if reply.item.hidden == hidden else None

    return await eventually_async(get, timeout=10, what=f"{item_id} hidden={hidden} read back")


async def test_changes_land_on_the_catalogue_topic_keyed_by_id_and_are_read_back(
        ingest: Ingest, kafka: TansuBroker) -> None:
    stub = ingest.catalog
    reply = await stub.BatchUpsertItems(catalog_pb2.BatchUpsertItemsRequest(items=[
        Item(item_id="i1", categories=["books"], labels=["author:a"]),
        Item(item_id="i2", categories=["music"]),
        Item(item_id="", categories=["books"]),
    ]), timeout=10)
    assert reply.accepted_count == 2
    assert [(r.index, r.field) for r in reply.rejections] == [(2, "item_id")]
    await item_once(ingest, "i1", hidden=False)
    hidden = await stub.HideItem(catalog_pb2.HideItemRequest(item_id="i1"), timeout=10)
    assert hidden.item.hidden and hidden.item.categories == ["books"]
    assert (await item_once(ingest, "i1", hidden=True)).labels == ["author:a"]
    await stub.DeleteItem(catalog_pb2.DeleteItemRequest(item_id="i2"), timeout=10)
    await stub.BatchUpsertUsers(catalog_pb2.BatchUpsertUsersRequest(
        users=[User(user_id="u1", labels=["de"])]), timeout=10)
    erased = await stub.EraseUser(catalog_pb2.EraseUserRequest(user_id="u1",
                                                               requested_by="test"), timeout=10)

    records = await asyncio.to_thread(read_topic, kafka.bootstrap, ingest.settings.catalog_topic)
    changes = [(r.key, CatalogChange.FromString(r.value)) for r in records]
    by_key: dict[bytes, list[str]] = {}
    for key, change in changes:
        by_key.setdefault(key, []).append(str(change.WhichOneof("change")))
    assert by_key == {b"item:i1": ["item", "item"], b"item:i2": ["item", "deleted_item_id"],
                      b"user:u1": ["user", "user_erasure"]}
    [erasure] = [c.user_erasure for _, c in changes if c.HasField("user_erasure")]
    assert erasure.requested_at == erased.requested_at
    assert set(erasure.interaction_offsets) == {0, 1, 2}  # every partition of the topic

    async def only_i1_listed() -> bool:
        page = await stub.ListItems(catalog_pb2.ListItemsRequest(), timeout=5)
        return [item.item_id for item in page.items] == ["i1"]

    await eventually_async(only_i1_listed, timeout=10, what="the deletion read back")


@pytest.mark.parametrize(("call", "request_", "field"), [
    ("GetItem", catalog_pb2.GetItemRequest(item_id="a\nb"), "item_id"),
    ("HideItem", catalog_pb2.HideItemRequest(item_id=""), "item_id"),
    ("EraseUser", catalog_pb2.EraseUserRequest(user_id="u1"), "requested_by"),
    ("ListItems", catalog_pb2.ListItemsRequest(page_size=5000), "page_size"),
    ("BatchUpsertItems", catalog_pb2.BatchUpsertItemsRequest(
        items=[Item(item_id="i1", categories=["x" * 65])], all_or_nothing=True),
     "items[0].categories"),
    ("BatchUpsertUsers", catalog_pb2.BatchUpsertUsersRequest(), "users"),
])
async def test_bad_input_is_invalid_argument_naming_the_field(
        ingest: Ingest, call: str, request_: object, field: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await getattr(ingest.catalog, call)(request_, timeout=5)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (caught.value.details() or "").startswith(f"{field}: ")
    if call == "BatchUpsertItems":
        assert rpc_status.from_call(caught.value) is not None  # the BadRequest detail


async def test_an_item_the_catalogue_does_not_hold_is_not_found(ingest: Ingest) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await ingest.catalog.GetItem(catalog_pb2.GetItemRequest(item_id="nowhere"), timeout=5)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
