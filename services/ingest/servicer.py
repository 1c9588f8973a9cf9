"""IngestService over gRPC: a thin layer between the protos and the ingest core."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from recsys.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from services.core.errors import InvalidArgument
from services.ingest.ingestor import Ingestor, Rejection

SERVICE = ingest_pb2.DESCRIPTOR.services_by_name["IngestService"].full_name


def _deadline(context: grpc.aio.ServicerContext) -> float | None:
    """Seconds the client gives this call, or None without a deadline."""
    return context.time_remaining()


def _rejections(rejections: list[Rejection]) -> list[ingest_pb2.Rejection]:
    return [ingest_pb2.Rejection(index=r.index, field=r.field, reason=r.reason)
            for r in rejections]


class IngestServicer(ingest_pb2_grpc.IngestServiceServicer):
    def __init__(self, ingestor: Ingestor) -> None:
        self._ingestor = ingestor

    async def CreateInteraction(
        self, request: ingest_pb2.CreateInteractionRequest, context: grpc.aio.ServicerContext
    ) -> ingest_pb2.CreateInteractionResponse:
        if not request.HasField("interaction"):
            raise InvalidArgument("interaction", "is required")
        event_id = await self._ingestor.create(request.interaction, time_left=_deadline(context))
        return ingest_pb2.CreateInteractionResponse(event_id=event_id)

    async def BatchCreateInteractions(
        self, request: ingest_pb2.BatchCreateInteractionsRequest,
        context: grpc.aio.ServicerContext,
    ) -> ingest_pb2.BatchCreateInteractionsResponse:
        result = await self._ingestor.ingest(
            request.interactions, all_or_nothing=request.all_or_nothing,
            time_left=_deadline(context))
        return ingest_pb2.BatchCreateInteractionsResponse(
            accepted_count=result.accepted, event_ids=result.event_ids,
            rejections=_rejections(result.rejections))

    async def StreamInteractions(
        self, request_iterator: AsyncIterator[ingest_pb2.StreamInteractionsRequest],
        context: grpc.aio.ServicerContext,
    ) -> ingest_pb2.StreamInteractionsResponse:
        stream = self._ingestor.stream(time_left=_deadline(context))
        async for request in request_iterator:
            await stream.add(request.interactions)
        result = await stream.finish()
        return ingest_pb2.StreamInteractionsResponse(
            accepted_count=result.accepted, rejected_count=result.rejected,
            rejections=_rejections(result.rejections))
