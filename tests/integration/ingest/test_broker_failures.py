"""IngestService when the broker goes away: statuses, health, recovery and durability.

These run on the durable broker (Tansu on SeaweedFS S3), so what was acknowledged before a
stop or a kill -9 must still be on the topic afterwards.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import grpc
import pytest

from recsys.events.v1 import interaction_pb2
from recsys.ingest.v1 import ingest_pb2
from scripts.localstack.components import TansuBroker
from services.cli.ingest import ingest_failure, stream_events
from services.data.synthetic import SyntheticData, SyntheticSpec
from tests.support.events import rating_event
from tests.support.ingest_server import (
    NOT_SERVING,
    SERVING,
    Ingest,
    launch_ingest,
    start_ingest,
)
from tests.support.polling import eventually_async
from tests.support.topics import read_topic

pytestmark = pytest.mark.integration


async def batch(ingest: Ingest, events: list[interaction_pb2.Interaction], *,
                deadline_s: float = 10.0) -> ingest_pb2.BatchCreateInteractionsResponse:
    return await ingest.stub.BatchCreateInteractions(
        ingest_pb2.BatchCreateInteractionsRequest(interactions=events), timeout=deadline_s)


async def test_a_stopped_broker_fails_calls_in_time_and_ingest_recovers(
    durable_kafka: TansuBroker,
) -> None:
    ingest = await start_ingest(durable_kafka.bootstrap)
    try:
        before = await batch(ingest, [rating_event(n) for n in range(100)])
        await asyncio.to_thread(durable_kafka.stop)

        # A call while health still says SERVING: the producer cannot deliver, and the answer
        # is the service's own (its IngestFailure detail), not the client giving up at its
        # deadline, which would carry none.
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await batch(ingest, [rating_event(n) for n in range(100, 110)], deadline_s=3.0)
        assert caught.value.code() in (grpc.StatusCode.UNAVAILABLE,
                                       grpc.StatusCode.DEADLINE_EXCEEDED)
        failure = ingest_failure(caught.value)
        assert failure is not None and failure.accepted_count == 0
        assert list(failure.not_accepted_indexes) == list(range(10))

        await ingest.wait_health(NOT_SERVING)
        assert ingest.metric("recsys_ingest_broker_up") == 0
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await batch(ingest, [rating_event(n) for n in range(200, 205)], deadline_s=5.0)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert (caught.value.details() or "").startswith("the Kafka broker is unreachable")
        failure = ingest_failure(caught.value)
        assert failure == ingest_pb2.IngestFailure(not_accepted_indexes=range(5))

        await asyncio.to_thread(lambda: durable_kafka.start().wait_ready(30))
        await ingest.wait_health(SERVING)
        assert ingest.metric("recsys_ingest_broker_up") == 1
        after = await batch(ingest, [rating_event(n) for n in range(300, 400)])
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
    ingest = await launch_ingest(durable_kafka.bootstrap)
    try:
        await ingest.wait_health(NOT_SERVING)  # up, answering, and honest about the broker
        assert ingest.metric("recsys_ingest_broker_up") == 0
        await asyncio.to_thread(lambda: durable_kafka.start().wait_ready(30))
        await ingest.wait_health(SERVING)
        assert (await batch(ingest, [rating_event(0)])).accepted_count == 1
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
        await eventually_async(
            lambda: (ingest.metric("recsys_ingest_events_total", outcome="accepted",
                                   reason="none") or 0) > 0,
            timeout=60, what="the broker acknowledging the stream's first events")
        assert not load.done(), "the load finished before the broker was killed"
        await asyncio.to_thread(durable_kafka.kill)
        await ingest.wait_health(NOT_SERVING)  # the outage is seen before the broker is back
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

        await ingest.wait_health(SERVING)
        records = await asyncio.to_thread(read_topic, durable_kafka.bootstrap, ingest.topic)
        on_topic = Counter(interaction_pb2.Interaction.FromString(r.value).event_id
                           for r in records)
        assert not accepted - on_topic.keys(), "accepted events missing from the topic"
        duplicated = {e: n for e, n in on_topic.items() if n > 1}
        assert not duplicated, f"{len(duplicated)} events on the topic more than once"
    finally:
        await ingest.stop()
