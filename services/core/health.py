"""Per-service health on top of grpcio-health-checking, with "" as the aggregate."""

from __future__ import annotations

from collections.abc import Iterable

from grpc_health.v1 import health_pb2
from grpc_health.v1.health import aio as health_aio

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

#: SERVING from start until shutdown, whatever the dependencies do: what a liveness probe asks
#: for, so a broker or registry outage makes a pod unready but never restarts it.
LIVENESS = "liveness"


class HealthReporter:
    """Tracks whether each service of a server is ready.

    The overall status ("") is SERVING only while every service is; "liveness" is SERVING
    while the server runs. After `shutdown()` every name reports NOT_SERVING and further
    changes are ignored.
    """

    def __init__(self, service_names: Iterable[str]) -> None:
        self.servicer = health_aio.HealthServicer()
        self._serving = dict.fromkeys(service_names, False)
        self._shut_down = False

    async def initialise(self) -> None:
        for name in self._serving:
            await self.servicer.set(name, NOT_SERVING)
        await self.servicer.set("", NOT_SERVING)
        await self.servicer.set(LIVENESS, SERVING)

    async def set_serving(self, service: str, serving: bool) -> None:
        if self._shut_down or self._serving[service] == serving:
            return
        self._serving[service] = serving
        await self.servicer.set(service, SERVING if serving else NOT_SERVING)
        await self.servicer.set("", SERVING if all(self._serving.values()) else NOT_SERVING)

    def is_serving(self, service: str) -> bool:
        return self._serving[service]

    async def shutdown(self) -> None:
        self._shut_down = True
        await self.servicer.enter_graceful_shutdown()
