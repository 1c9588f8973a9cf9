"""The server factory and lifecycle every service uses.

`build_server` registers, in one fixed order, the servicers, health, reflection and the
interceptors, and returns the server unstarted, so tests and `__main__` build it the same way.
`serve` runs it until SIGTERM/SIGINT and shuts down in order: health NOT_SERVING, the app ends
its long-running work (a client stream, a training job), in-flight RPCs drain within the grace
period, the service's resources close.

With TLS settings the gRPC port speaks TLS (mutual TLS with a CA: see `services.core.tls`, and
then each caller's certificate identity is checked: `services.core.callers`),
and RECSYS_HEALTH_PORT adds a plaintext port that serves grpc.health.v1 only, from the same
health state, for probes that cannot present a client certificate.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry, start_http_server

from services.core.callers import CallerPolicy
from services.core.config import ServerSettings
from services.core.health import HealthReporter
from services.core.interceptors import (
    AuthorizationInterceptor,
    ErrorInterceptor,
    MetricsInterceptor,
)
from services.core.metrics import GrpcServerMetrics

log = logging.getLogger(__name__)

# Larger than gRPC's 4 MiB default so a 1,000-event batch with context maps always fits.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class ServiceBinding:
    """A servicer and how to add it to a server."""

    name: str  # full service name, e.g. "recsys.ingest.v1.IngestService"
    register: Callable[[grpc.aio.Server], None]


class App(Protocol):
    """What a service plugs into the shared runtime."""

    @property
    def bindings(self) -> Sequence[ServiceBinding]: ...

    async def start(self, health: HealthReporter) -> None:
        """Begin background work (connect to dependencies) and report health; must not block."""

    async def drain(self) -> None:
        """Shutdown has begun (health is NOT_SERVING, calls in flight may finish): end what
        would otherwise outlast the grace period, such as client streams or a training job,
        so that their calls end with a status of ours; must not block."""

    async def close(self) -> None:
        """Release resources after the server stopped; idempotent."""


@dataclass
class RunningServer:
    server: grpc.aio.Server
    health: HealthReporter
    app: App
    calls: MetricsInterceptor
    port: int
    metrics_port: int
    health_server: grpc.aio.Server | None = None
    health_port: int | None = None  # the plaintext health-only port, when configured
    _closers: list[Callable[[], None]] = field(default_factory=list)

    async def stop(self, grace: float, *, delay: float = 0.0) -> None:
        """Health NOT_SERVING, serve on for `delay` seconds (while load balancers notice), let
        the app end its long work, refuse new RPCs, drain in-flight ones within `grace`, close
        the app. Logs how many calls the grace period cut short."""
        await self.health.shutdown()
        if delay:
            await asyncio.sleep(delay)
        log.info("draining", extra={"in_flight": self.calls.in_flight, "grace_s": grace})
        await self.app.drain()
        # Calls still in flight when the grace period runs out are cut short (cancelled).
        cut: list[int] = []
        count_cut = asyncio.get_running_loop().call_later(
            grace, lambda: cut.append(self.calls.in_flight))
        await self.server.stop(grace)  # returns once every call has ended
        count_cut.cancel()
        log.info("drained", extra={"cut_short": cut[0] if cut else 0})
        if self.health_server is not None:  # probes see NOT_SERVING until the end
            await self.health_server.stop(0)
        await self.app.close()
        for close in self._closers:
            close()
        self._closers.clear()


def build_server(
    app: App, health: HealthReporter, calls: MetricsInterceptor, *,
    callers: CallerPolicy | None = None,
) -> grpc.aio.Server:
    """An unstarted grpc.aio server with the app's services, health, reflection, interceptors;
    `calls` measures every RPC (outermost); with `callers` (mutual TLS), only the identities
    it allows get past the interceptors."""
    interceptors: list[grpc.aio.ServerInterceptor] = [calls, ErrorInterceptor()]
    if callers is not None:
        interceptors.append(AuthorizationInterceptor(callers))
    server = grpc.aio.server(
        interceptors=interceptors,
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
        ],
    )
    for binding in app.bindings:
        binding.register(server)
    health_pb2_grpc.add_HealthServicer_to_server(health.servicer, server)
    names = [b.name for b in app.bindings]
    reflection.enable_server_reflection(
        [*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
         reflection.SERVICE_NAME],
        server,
    )
    return server


async def start(app: App, settings: ServerSettings, registry: CollectorRegistry) -> RunningServer:
    """Build, bind and start the server and its metrics endpoint; then start the app."""
    health = HealthReporter(b.name for b in app.bindings)
    await health.initialise()
    calls = MetricsInterceptor(GrpcServerMetrics.create(registry))
    tls = settings.server_tls()
    server = build_server(app, health, calls,
                          callers=settings.caller_policy() if tls and tls.mutual else None)
    address = f"{settings.host}:{settings.grpc_port}"
    port = (server.add_insecure_port(address) if tls is None
            else server.add_secure_port(address, tls.credentials()))
    if port == 0:
        raise OSError(f"cannot bind gRPC port {address}")
    health_server = health_port = None
    if settings.health_port:
        health_server, health_port = _health_only_server(health, settings)
    metrics_http, _ = start_http_server(settings.metrics_port, settings.host, registry)
    await server.start()
    if health_server is not None:
        await health_server.start()
    running = RunningServer(server, health, app, calls, port, metrics_http.server_port,
                            health_server, health_port)
    running._closers.append(metrics_http.shutdown)
    await app.start(health)
    log.info("serving", extra={
        "grpc_port": port, "metrics_port": running.metrics_port, "health_port": health_port,
        "tls": "off" if tls is None else "mutual" if tls.mutual else "on",
        "services": [b.name for b in app.bindings]})
    return running


def _health_only_server(health: HealthReporter,
                        settings: ServerSettings) -> tuple[grpc.aio.Server, int]:
    """grpc.health.v1 alone, in plaintext: no servicer, no reflection, nothing else."""
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    health_pb2_grpc.add_HealthServicer_to_server(health.servicer, server)
    address = f"{settings.host}:{settings.health_port}"
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot bind health port {address}")
    return server, port


async def serve(app: App, settings: ServerSettings, registry: CollectorRegistry) -> None:
    """Run until SIGTERM or SIGINT, then shut down in order within the grace period."""
    running = await start(app, settings, registry)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    await stopping.wait()
    log.info("shutting down", extra={"grace_s": settings.shutdown_grace_s,
                                     "delay_s": settings.shutdown_delay_s})
    await running.stop(settings.shutdown_grace_s, delay=settings.shutdown_delay_s)
    log.info("stopped")
