"""A RecommenderService whose behaviour each test chooses by user_id, to probe the runtime.

`python -m tests.support.probe_app` serves it through services.core.main, exactly as a real
service's __main__ does, for the signal-handling tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from functools import partial

import grpc
from prometheus_client import CollectorRegistry

from recsys.recommender.v1 import recommender_pb2, recommender_pb2_grpc
from services.core import main
from services.core.callers import current_caller
from services.core.config import ServerSettings
from services.core.health import HealthReporter
from services.core.server import ServiceBinding
from tests.support.errors import example, recsys_errors

SERVICE = recommender_pb2.DESCRIPTOR.services_by_name["RecommenderService"].full_name

#: user_id → the exception the probe raises: "raise-<RecsysError subclass>" for each of
#: them, and "bug" for an unexpected exception.
FAILURES: dict[str, Callable[[], Exception]] = {
    **{f"raise-{error.__name__}": partial(example, error) for error in recsys_errors()},
    "bug": lambda: RuntimeError("secret internal detail"),
}


class ProbeServicer(recommender_pb2_grpc.RecommenderServiceServicer):
    async def Recommend(
        self, request: recommender_pb2.RecommendRequest, context: grpc.aio.ServicerContext
    ) -> recommender_pb2.RecommendResponse:
        if request.user_id == "whoami":  # who the runtime says is calling
            return recommender_pb2.RecommendResponse(model_version=str(current_caller()))
        if request.user_id.startswith("sleep-"):
            await asyncio.sleep(float(request.user_id.removeprefix("sleep-")))
        elif request.user_id in FAILURES:
            raise FAILURES[request.user_id]()
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

    async def drain(self) -> None:
        pass

    async def close(self) -> None:
        self.closed = True


def make_app(settings: ServerSettings, registry: CollectorRegistry) -> ProbeApp:
    return ProbeApp()


if __name__ == "__main__":
    main.run(ServerSettings, "RECSYS_PROBE_", make_app)
