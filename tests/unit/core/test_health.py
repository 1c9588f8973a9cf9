"""The "liveness" health name: SERVING while the server runs, whatever its services report,
so a Kubernetes liveness probe never restarts a pod for a dependency's outage."""

from __future__ import annotations

from grpc_health.v1 import health_pb2

from services.core.health import LIVENESS, HealthReporter

SERVICE = "recsys.test.v1.TestService"


async def status(reporter: HealthReporter, name: str) -> int:
    # Context is only used for unknown names, which these are not.
    reply = await reporter.servicer.Check(health_pb2.HealthCheckRequest(service=name), None)
    return reply.status


async def test_liveness_is_serving_while_a_service_is_not() -> None:
    reporter = HealthReporter([SERVICE])
    await reporter.initialise()
    assert await status(reporter, SERVICE) == health_pb2.HealthCheckResponse.NOT_SERVING
    assert await status(reporter, "") == health_pb2.HealthCheckResponse.NOT_SERVING
    assert await status(reporter, LIVENESS) == health_pb2.HealthCheckResponse.SERVING

    await reporter.set_serving(SERVICE, True)
    await reporter.set_serving(SERVICE, False)
    assert await status(reporter, LIVENESS) == health_pb2.HealthCheckResponse.SERVING


async def test_liveness_ends_with_shutdown() -> None:
    reporter = HealthReporter([SERVICE])
    await reporter.initialise()
    await reporter.shutdown()
    assert await status(reporter, LIVENESS) == health_pb2.HealthCheckResponse.NOT_SERVING
