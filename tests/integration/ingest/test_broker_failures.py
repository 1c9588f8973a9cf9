"""IngestService when the broker goes away: statuses, health, recovery and durability.

These run on the durable broker (Tansu on SeaweedFS S3), so what was acknowledged before a
stop or a kill -9 must still be on the topic afterwards.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import grpc
import pytest
from grpc_health.v1 import health_pb2

from recsys.events.v1 import interaction_pb2
from recsys.ingest.v1 import ingest_pb2
from scripts.localstack.components import TansuBroker
from services.cli.ingest import ingest_failure, stream_events
from services.data.synthetic import SyntheticData, SyntheticSpec
from tests.integration.ingest.support import (
    Ingest,
    make_event,
    read_topic,
    start_ingest,
)

pytestmark = pytest.mark.integration

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def batch(ingest: Ingest, events: list[interaction_pb2.Interaction], *,
                deadline_s: float = 10.0) -> ingest_pb2.BatchCreateInteractionsResponse:
    return await ingest.stub.BatchCreateInteractions(
        ingest_pb2.BatchCreateInteractionsRequest(interactions=events), timeout=deadline_s)


async def test_a_stopped_broker_fails_calls_in_time_and_ingest_recovers(
    durable_kafka: TansuBroker,
) -> None:
    ingest = await start_ingest(durable_kafka.bootstrap)
    try:
        before = await batch(ingest, [make_event(n) for n in range(100)])
        await asyncio.to_thread(durable_kafka.stop)

        # A call while health still says SERVING: the producer cannot deliver, and the
        # answer comes before the client's deadline, with what was not published.
        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await batch(ingest, [make_event(n) for n in range(100, 110)], deadline_s=3.0)
        assert time.monotonic() - started < 3.0
        assert caught.value.code() in (grpc.StatusCode.UNAVAILABLE,
                                       grpc.StatusCode.DEADLINE_EXCEEDED)
        failure = ingest_failure(caught.value)
        assert failure is not None and failure.accepted_count == 0
        assert list(failure.not_accepted_indexes) == list(range(10))

        assert await ingest.wait_health(NOT_SERVING, within=10) < 10
        assert ingest.metric("recsys_ingest_broker_up") == 0
        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await batch(ingest, [make_event(n) for n in range(200, 205)], deadline_s=5.0)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert time.monotonic() - started < 5.0
        assert (caught.value.details() or "").startswith("the Kafka broker is unreachable")
        failure = ingest_failure(caught.value)
        assert failure == ingest_pb2.IngestFailure(not_accepted_indexes=range(5))

        await asyncio.to_thread(lambda: durable_kafka.start().wait_ready(30))
        await ingest.wait_health(SERVING, within=30)
        assert ingest.metric("recsys_ingest_broker_up") == 1
        after = await batch(ingest, [make_event(n) for n in range(300, 400)])
        assert after.accepted_count == 100

        records = await asyncio.to_thread(read_topic, durable_kafka.bootstrap, ingest.topic)
        on_topic = Counter(interaction_pb2.Interaction.FromString(r.value).event_id
                           for r in records)
        for event_id in [*before.event_ids, *after.event_ids]:
            assert on_topic[event_id] == 1, event_id
    finally:
        await ingest.stop()


async def test_ingest_starts_without_a_broker_and_serves_once_it_is_up(
    durable_kafka: TansuBroker,
) -> None:
    await asyncio.to_thread(durable_kafka.stop)
    starting = asyncio.create_task(start_ingest(durable_kafka.bootstrap))
    await asyncio.sleep(2)
    assert not starting.done()  # up, but NOT_SERVING: start_ingest waits for SERVING
    await asyncio.to_thread(lambda: durable_kafka.start().wait_ready(30))
    ingest = await asyncio.wait_for(starting, 30)
    try:
        assert (await batch(ingest, [make_event(0)])).accepted_count == 1
    finally:
        await ingest.stop()


async def test_kill_9_mid_stream_loses_and_duplicates_no_accepted_event(
    durable_kafka: TansuBroker,
) -> None:
    ingest = await start_ingest(durable_kafka.bootstrap, ack_timeout_s=20.0)
    spec = SyntheticSpec(users=500, items=300, events=120_000, seed=9)
    try:
        load = asyncio.create_task(asyncio.to_thread(
            stream_events, SyntheticData(spec).events(), target=ingest.target, timeout_s=120))
        await asyncio.sleep(1.5)
        assert not load.done(), "the load finished before the broker was killed"
        await asyncio.to_thread(durable_kafka.kill)
        await asyncio.sleep(1.0)
        await asyncio.to_thread(lambda: durable_kafka.start().wait_ready(30))
        summary = await load

        # The stream read events [0, read) in order; those it did not publish are listed.
        failure = summary.failure or ingest_pb2.IngestFailure(accepted_count=summary.accepted)
        if summary.error:
            assert summary.error.startswith(("UNAVAILABLE", "DEADLINE_EXCEEDED")), summary.error
            assert summary.failure is not None, "a failed load must say what was published"
        missing = set(failure.not_accepted_indexes)
        read = failure.accepted_count + len(missing)
        accepted = {f"syn-9-{i}" for i in range(read) if i not in missing}
        assert len(accepted) == failure.accepted_count > 0

        await ingest.wait_health(SERVING, within=30)
        records = await asyncio.to_thread(read_topic, durable_kafka.bootstrap, ingest.topic)
        on_topic = Counter(interaction_pb2.Interaction.FromString(r.value).event_id
                           for r in records)
        assert not accepted - on_topic.keys(), "accepted events missing from the topic"
        duplicated = {e: n for e, n in on_topic.items() if n > 1}
        assert not duplicated, f"{len(duplicated)} events on the topic more than once"
    finally:
        await ingest.stop()
