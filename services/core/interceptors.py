"""Server interceptors: Prometheus metrics outermost, then the one error mapping, then (with
mutual TLS) who may call what."""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import grpc
from google.rpc import code_pb2, status_pb2
from grpc_status import rpc_status

from services.core.callers import CALLER_HEADER, CallerPolicy, acting_as
from services.core.errors import PermissionDenied, RecsysError
from services.core.metrics import GrpcServerMetrics
from services.core.names import ADMIN_METHODS

log = logging.getLogger(__name__)

Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]]
Guard = Callable[[grpc.aio.ServicerContext], AbstractAsyncContextManager[None]]

_BEHAVIOUR_FIELDS = {
    (False, False): ("unary", "unary_unary"),
    (False, True): ("server_stream", "unary_stream"),
    (True, False): ("client_stream", "stream_unary"),
    (True, True): ("bidi_stream", "stream_stream"),
}
_CODES = {code.value[0]: code for code in grpc.StatusCode}
# A negative server pushback stops clients' transparent gRPC retries (gRFC A6).
_NO_RETRY = (("grpc-retry-pushback-ms", "-1"),)


def _rpc_type(handler: grpc.RpcMethodHandler) -> str:
    return _BEHAVIOUR_FIELDS[handler.request_streaming, handler.response_streaming][0]


def _guarded(handler: grpc.RpcMethodHandler, guard: Guard) -> grpc.RpcMethodHandler:
    """`handler` with its behaviour run inside `guard(context)`.

    A streaming response is either an async generator or a coroutine that calls
    context.write() (as grpcio-health-checking's Watch does); both are wrapped.
    """
    field = _BEHAVIOUR_FIELDS[handler.request_streaming, handler.response_streaming][1]
    behaviour = getattr(handler, field)

    if inspect.isasyncgenfunction(behaviour):

        async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            async with guard(context):
                async for response in behaviour(request, context):
                    yield response

        return handler._replace(**{field: stream})  # type: ignore[attr-defined]

    async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
        async with guard(context):
            return await behaviour(request, context)

    return handler._replace(**{field: call})  # type: ignore[attr-defined]


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    """Maps RecsysError to its status; anything unexpected becomes INTERNAL, logged once."""

    async def intercept_service(
        self, continuation: Continuation, details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(details)
        if handler is None:
            return None

        @asynccontextmanager
        async def mapped_errors(context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
            try:
                yield
            except grpc.aio.AbortError:
                raise
            except RecsysError as exc:
                await _abort_with(context, exc)
            except Exception:
                log.exception("unhandled error", extra={"grpc_method": details.method})
                await context.abort(grpc.StatusCode.INTERNAL, "internal error")

        return _guarded(handler, mapped_errors)


async def _abort_with(context: grpc.aio.ServicerContext, exc: RecsysError) -> None:
    trailing = () if exc.retryable else _NO_RETRY
    if exc.details is None:
        await context.abort(exc.code, exc.message, trailing)
    status = status_pb2.Status(code=getattr(code_pb2, exc.code.name), message=exc.message)
    status.details.add().Pack(exc.details)
    rich = rpc_status.to_status(status)
    await context.abort(rich.code, rich.details, (*rich.trailing_metadata, *trailing))


class MetricsInterceptor(grpc.aio.ServerInterceptor):
    """Counts started and handled RPCs and times them, labelled by type, service and method;
    `in_flight` is how many calls have started and not yet ended."""

    def __init__(self, metrics: GrpcServerMetrics) -> None:
        self._metrics = metrics
        self.in_flight = 0

    async def intercept_service(
        self, continuation: Continuation, details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(details)
        if handler is None:
            return None
        service, _, method = details.method.lstrip("/").rpartition("/")
        labels = (_rpc_type(handler), service, method)
        metrics = self._metrics

        @asynccontextmanager
        async def measured(context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
            metrics.started.labels(*labels).inc()
            self.in_flight += 1
            start, failed = time.perf_counter(), True
            try:
                yield
                failed = False
            finally:
                self.in_flight -= 1
                code = context.code()
                if isinstance(code, int):
                    code = _CODES.get(code, grpc.StatusCode.UNKNOWN)
                if code is None:
                    code = grpc.StatusCode.UNKNOWN if failed else grpc.StatusCode.OK
                metrics.handled.labels(*labels, code.name).inc()
                metrics.handling_seconds.labels(*labels).observe(time.perf_counter() - start)

        return _guarded(handler, measured)


class AuthorizationInterceptor(grpc.aio.ServerInterceptor):
    """Refuses a caller whose client certificate `policy` does not allow for the method
    (PERMISSION_DENIED), runs the RPC as that caller (`services.core.callers.current_caller`)
    and logs every admin RPC with who called it. Installed only with mutual TLS."""

    def __init__(self, policy: CallerPolicy) -> None:
        self._policy = policy

    async def intercept_service(
        self, continuation: Continuation, details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(details)
        if handler is None:
            return None
        method, policy = details.method, self._policy
        subject = next((str(value) for key, value in details.invocation_metadata or ()
                        if key == CALLER_HEADER), None)

        @asynccontextmanager
        async def authorised(context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
            identities = [name.decode() for name in context.peer_identities() or ()]
            caller = policy.caller(identities, subject)
            if not policy.permits(method, identities):
                log.warning("call refused", extra={"grpc_method": method,
                                                   "caller": str(caller)})
                raise PermissionDenied(f"{caller} may not call {method}")
            if method in ADMIN_METHODS:
                log.info("admin call", extra={"grpc_method": method, "caller": str(caller)})
            with acting_as(caller):
                yield

        return _guarded(handler, authorised)
