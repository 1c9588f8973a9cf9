"""CatalogService through Envoy (REST and gRPC): changes need `catalog:write`, bad input is
INVALID_ARGUMENT naming the field, and what is changed reaches Recommend's answers."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from recsys.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from recsys.events.v1.catalog_pb2 import Item
from tests.support.clients import Rest, envoy_channel
from tests.support.edge import ITEMS, USERS, Edge
from tests.support.polling import eventually

pytestmark = pytest.mark.integration


def group(item: str) -> str:
    """The edge's data: three taste groups, each with its third of the items."""
    return f"group{ITEMS.index(item) // 10}"


@pytest.fixture(scope="module")
def catalog(edge: Edge) -> Iterator[catalog_pb2_grpc.CatalogServiceStub]:
    """CatalogService through Envoy, with every item in its group's category."""
    reply = edge.rest.post("/v1/items:batchUpsert", {"items": [
        {"itemId": item, "categories": [group(item)]} for item in ITEMS]})
    assert reply.status == 200, reply.body
    assert reply.body["acceptedCount"] == len(ITEMS)
    with envoy_channel(edge.envoy, edge.pki, edge.token) as channel:
        yield catalog_pb2_grpc.CatalogServiceStub(channel)


def recommended(rest: Rest, user: str, query: str = "") -> list[str]:
    reply = rest.get(f"/v1/users/{user}/recommendations?k=5{query}")
    assert reply.status == 200, reply.body
    return [item["itemId"] for item in reply.body["items"]]


@pytest.mark.usefixtures("catalog")
def test_a_category_filter_and_a_hide_through_rest_reach_the_answers(edge: Edge) -> None:
    rest = edge.rest
    user = USERS[0]  # of group 0: group 1 is not what they like
    eventually(lambda: len(in_group := recommended(rest, user, "&categories=group1")) == 5
               and {group(item) for item in in_group} == {"group1"},
               timeout=10, what="5 answers of group1 only")
    top = recommended(rest, user)[0]
    hidden = rest.post(f"/v1/items/{top}:hide")
    assert hidden.status == 200, hidden.body
    assert hidden.body["item"]["hidden"] is True
    try:
        eventually(lambda: top not in recommended(rest, user), timeout=10,
                   what=f"{top} out of the answers")
        eventually(lambda: rest.get(f"/v1/items/{top}").body["item"]["hidden"] is True,
                   timeout=10, what=f"{top} read back hidden")
    finally:
        assert rest.post(f"/v1/items/{top}:unhide").status == 200
    eventually(lambda: recommended(rest, user)[0] == top, timeout=10, what=f"{top} back")


def test_changes_need_the_catalog_write_scope(edge: Edge) -> None:
    reader = edge.rest.with_token(edge.pki.mint_token(["catalog:read", "recommend:read"],
                                                      subject="catalog-reader"))
    refused = reader.post(f"/v1/items/{ITEMS[0]}:hide")
    assert (refused.status, refused.body["code"]) == (403, 7)
    assert reader.get("/v1/items?pageSize=2").status == 200


@pytest.mark.parametrize(("method", "path", "body", "field"), [
    ("POST", "/v1/items:batchUpsert",
     {"items": [{"itemId": "x", "categories": ["c" * 65]}], "allOrNothing": True},
     "items[0].categories"),
    ("POST", "/v1/users:batchUpsert", {"users": []}, "users"),
    ("POST", "/v1/users/u1:erase", {}, "requested_by"),
    ("GET", f"/v1/users/{USERS[0]}/recommendations?categories={'c' * 65}", None, "categories"),
    ("GET", f"/v1/items/{ITEMS[0]}/similar?categories=", None, "categories"),
])
def test_bad_catalogue_input_over_rest_is_400_naming_the_field(
        rest: Rest, method: str, path: str, body: object, field: str) -> None:
    reply = rest.request(method, path, body)
    assert (reply.status, reply.body["code"]) == (400, 3), reply.body
    assert reply.body["message"].startswith(f"{field}: ")


def test_bad_catalogue_input_over_grpc_is_invalid_argument_naming_the_field(
        catalog: catalog_pb2_grpc.CatalogServiceStub) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        catalog.BatchUpsertItems(catalog_pb2.BatchUpsertItemsRequest(
            items=[Item(item_id="x", labels=[""])], all_or_nothing=True), timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (caught.value.details() or "").startswith("items[0].labels: ")
