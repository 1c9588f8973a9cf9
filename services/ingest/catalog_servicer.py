"""CatalogService over gRPC: a thin layer between the protos and the catalogue core."""

from __future__ import annotations

import grpc

from recsys.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from services.ingest.catalog import Catalog
from services.ingest.ingestor import Rejection

SERVICE = catalog_pb2.DESCRIPTOR.services_by_name["CatalogService"].full_name


def _rejections(rejections: list[Rejection]) -> list[catalog_pb2.Rejection]:
    return [catalog_pb2.Rejection(index=r.index, field=r.field, reason=r.reason)
            for r in rejections]


class CatalogServicer(catalog_pb2_grpc.CatalogServiceServicer):
    def __init__(self, catalog: Catalog) -> None:
        self._catalog = catalog

    async def BatchUpsertItems(
        self, request: catalog_pb2.BatchUpsertItemsRequest, context: grpc.aio.ServicerContext
    ) -> catalog_pb2.BatchUpsertItemsResponse:
        result = await self._catalog.upsert_items(
            request.items, all_or_nothing=request.all_or_nothing,
            time_left=context.time_remaining())
        return catalog_pb2.BatchUpsertItemsResponse(
            accepted_count=result.accepted, rejections=_rejections(result.rejections))

    async def GetItem(
        self, request: catalog_pb2.GetItemRequest, context: grpc.aio.ServicerContext
    ) -> catalog_pb2.GetItemResponse:
        return catalog_pb2.GetItemResponse(item=self._catalog.get_item(request.item_id))

    async def ListItems(
        self, request: catalog_pb2.ListItemsRequest, context: grpc.aio.ServicerContext
    ) -> catalog_pb2.ListItemsResponse:
        items, token = self._catalog.list_items(
            page_size=request.page_size, page_token=request.page_token,
            category=request.category)
        return catalog_pb2.ListItemsResponse(items=items, next_page_token=token)

    async def HideItem(
        self, request: catalog_pb2.HideItemRequest, context: grpc.aio.ServicerContext
    ) -> catalog_pb2.HideItemResponse:
        item = await self._catalog.set_hidden(request.item_id, True,
                                              time_left=context.time_remaining())
        return catalog_pb2.HideItemResponse(item=item)

    async def UnhideItem(
        self, request: catalog_pb2.UnhideItemRequest, context: grpc.aio.ServicerContext
    ) -> catalog_pb2.UnhideItemResponse:
        item = await self._catalog.set_hidden(request.item_id, False,
                                              time_left=context.time_remaining())
        return catalog_pb2.UnhideItemResponse(item=item)

    async def DeleteItem(
        self, request: catalog_pb2.DeleteItemRequest, context: grpc.aio.ServicerContext
    ) -> catalog_pb2.DeleteItemResponse:
        await self._catalog.delete_item(request.item_id, time_left=context.time_remaining())
        return catalog_pb2.DeleteItemResponse()

    async def BatchUpsertUsers(
        self, request: catalog_pb2.BatchUpsertUsersRequest, context: grpc.aio.ServicerContext
    ) -> catalog_pb2.BatchUpsertUsersResponse:
        result = await self._catalog.upsert_users(
            request.users, all_or_nothing=request.all_or_nothing,
            time_left=context.time_remaining())
        return catalog_pb2.BatchUpsertUsersResponse(
            accepted_count=result.accepted, rejections=_rejections(result.rejections))

    async def EraseUser(
        self, request: catalog_pb2.EraseUserRequest, context: grpc.aio.ServicerContext
    ) -> catalog_pb2.EraseUserResponse:
        requested_at = await self._catalog.erase_user(
            request.user_id, requested_by=request.requested_by,
            time_left=context.time_remaining())
        return catalog_pb2.EraseUserResponse(requested_at=requested_at)
