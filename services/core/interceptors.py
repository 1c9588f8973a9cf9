"""Server interceptors: Prometheus metrics outermost, then the one error mapping."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.rpc import code_pb2, status_pb2
from grpc_status import rpc_status

from services.core.errors import RecsysError
from services.core.metrics import GrpcServerMetrics

log = logging.getLogger(__name__)

Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]]


def _kind(handler: grpc.RpcMethodHandler) -> str:
    if handler.request_streaming and handler.response_streaming:
        return "bidi_stream"
    if handler.request_streaming:
        return "client_stream"
    return "server_stream" if handler.response_streaming else "unary"


def _wrap(handler: grpc.RpcMethodHandler, around: Callable[[Any], Any]) -> grpc.RpcMethodHandler:
    """Return `handler` with its behaviour replaced by `around(behaviour)`."""
    field = {
        "unary": "unary_unary",
        "server_stream": "unary_stream",
        "client_stream": "stream_unary",
        "bidi_stream": "stream_stream",
    }[_kind(handler)]
    return handler._replace(**{field: around(getattr(handler, field))})  # type: ignore[attr-defined]


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    """Maps RecsysError to its status; anything unexpected becomes INTERNAL, logged once."""

    async def intercept_service(
        self, continuation: Continuation, details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(details)
        if handler is None:
            return None
        method = details.method
        if handler.response_streaming:

            def around(behaviour: Any) -> Any:
                async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
                    try:
                        async for response in behaviour(request, context):
                            yield response
                    except Exception as exc:  # noqa: BLE001 - mapped, never swallowed
                        await _abort(context, exc, method)

                return wrapper
        else:

            def around(behaviour: Any) -> Any:
                async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
                    try:
                        return await behaviour(request, context)
                    except Exception as exc:  # noqa: BLE001 - mapped, never swallowed
                        await _abort(context, exc, method)

                return wrapper

        return _wrap(handler, around)


async def _abort(context: grpc.aio.ServicerContext, exc: Exception, method: str) -> None:
    if isinstance(exc, grpc.aio.AbortError):
        raise exc
    if isinstance(exc, RecsysError):
        if exc.details is None:
            await context.abort(exc.code, exc.message)
        status = status_pb2.Status(code=getattr(code_pb2, exc.code.name), message=exc.message)
        status.details.add().Pack(exc.details)
        await context.abort_with_status(rpc_status.to_status(status))
    log.exception("unhandled error in %s", method, exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, "internal error")


class MetricsInterceptor(grpc.aio.ServerInterceptor):
    """Counts started and handled RPCs and times them, labelled by type, service and method."""

    def __init__(self, metrics: GrpcServerMetrics) -> None:
        self._metrics = metrics

    async def intercept_service(
        self, continuation: Continuation, details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(details)
        if handler is None:
            return None
        service, _, name = details.method.lstrip("/").rpartition("/")
        labels = (_kind(handler), service, name)
        metrics = self._metrics

        def finish(context: grpc.aio.ServicerContext, start: float, failed: bool) -> None:
            code = context.code()
            if code is None:
                code = grpc.StatusCode.UNKNOWN if failed else grpc.StatusCode.OK
            elif isinstance(code, int):
                code = _CODES.get(code, grpc.StatusCode.UNKNOWN)
            metrics.handled.labels(*labels, code.name).inc()
            metrics.handling_seconds.labels(*labels).observe(time.perf_counter() - start)

        if handler.response_streaming:

            def around(behaviour: Any) -> Any:
                async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                    metrics.started.labels(*labels).inc()
                    start, failed = time.perf_counter(), True
                    try:
                        async for response in behaviour(request, context):
                            yield response
                        failed = False
                    finally:
                        finish(context, start, failed)

                return wrapper
        else:

            def around(behaviour: Any) -> Any:
                async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
                    metrics.started.labels(*labels).inc()
                    start, failed = time.perf_counter(), True
                    try:
                        response = await behaviour(request, context)
                        failed = False
                        return response
                    finally:
                        finish(context, start, failed)

                return wrapper

        return _wrap(handler, around)


_CODES = {code.value[0]: code for code in grpc.StatusCode}
