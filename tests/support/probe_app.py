"""A RecommenderService whose behaviour each test chooses by user_id, to probe the runtime.

`python -m tests.support.probe_app` serves it through services.core.main, exactly as a real
service's __main__ does, for the signal-handling tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import grpc
from prometheus_client import CollectorRegistry

from recsys.recommender.v1 import recommender_pb2, recommender_pb2_grpc
from services.core import errors, main
from services.core.config import ServerSettings
from services.core.health import HealthReporter
from services.core.server import ServiceBinding

SERVICE = recommender_pb2.DESCRIPTOR.services_by_name["RecommenderService"].full_name

# user_id → exception the probe raises, for testing the error mapping.
FAILURES: dict[str, Exception] = {
    "invalid": errors.InvalidArgument("user_id", "must be 1 to 128 characters"),
    "not-found": errors.NotFound("user u1 not found"),
    "exists": errors.AlreadyExists("job j1 is running"),
    "precondition": errors.FailedPrecondition("no model loaded yet"),
    "unavailable": errors.Unavailable("broker unreachable"),
    "deadline": errors.DeadlineExceeded("broker too slow"),
    "bug": RuntimeError("secret internal detail"),
}


class ProbeServicer(recommender_pb2_grpc.RecommenderServiceServicer):
    async def Recommend(
        self, request: recommender_pb2.RecommendRequest, context: grpc.aio.ServicerContext
    ) -> recommender_pb2.RecommendResponse:
        if request.user_id.startswith("sleep-"):
            await asyncio.sleep(float(request.user_id.removeprefix("sleep-")))
        elif request.user_id in FAILURES:
            raise FAILURES[request.user_id]
        return recommender_pb2.RecommendResponse(model_version="probe", items=[
            recommender_pb2.ScoredItem(item_id="i1", score=1.0)
        ])


class ProbeApp:
    def __init__(self) -> None:
        self.closed = False

    @property
    def bindings(self) -> Sequence[ServiceBinding]:
        return [ServiceBinding(SERVICE, lambda server: recommender_pb2_grpc
                               .add_RecommenderServiceServicer_to_server(ProbeServicer(), server))]

    async def start(self, health: HealthReporter) -> None:
        await health.set_serving(SERVICE, True)

    async def close(self) -> None:
        self.closed = True


def make_app(settings: ServerSettings, registry: CollectorRegistry) -> ProbeApp:
    return ProbeApp()


if __name__ == "__main__":
    main.run(ServerSettings, "RECSYS_PROBE_", make_app)
