"""The ingest core: validation outcomes, what reaches the producer, and broker failures."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable

import pytest
from google.rpc import error_details_pb2, status_pb2
from prometheus_client import CollectorRegistry

from recsys.events.v1 import interaction_pb2
from recsys.ingest.v1 import ingest_pb2
from services.core.errors import DeadlineExceeded, InvalidArgument, Unavailable
from services.ingest.ingestor import MAX_LISTED_REJECTIONS, Ingestor, Rejection
from services.ingest.publisher import Publisher
from services.ingest.settings import MAX_BATCH_LIMIT
from services.ingest.validation import derive_event_id
from tests.support.events import NOW, view_event
from tests.support.fake_producer import FakeProducer
from tests.support.polling import eventually_async

MakeIngestor = Callable[..., Ingestor]
IDS = "must be 1 to 128 printable characters"


async def handed_over(producer: FakeProducer, count: int) -> None:
    """Until `count` records reached the producer (the ingest core then waits for acks)."""
    await eventually_async(lambda: len(producer.records) == count, timeout=10,
                           what=f"{count} records sent to the producer")


def published(producer: FakeProducer) -> list[interaction_pb2.Interaction]:
    return [interaction_pb2.Interaction.FromString(r.value) for r in producer.records]


def metric(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


async def test_a_batch_publishes_valid_events_and_rejects_the_rest_by_index(
    make_ingestor: MakeIngestor, producer: FakeProducer, registry: CollectorRegistry
) -> None:
    events = [view_event(0, event_id="client-id"), view_event(1, user_id=""), view_event(2),
              view_event(3, type=interaction_pb2.INTERACTION_TYPE_UNSPECIFIED)]
    expected_id = derive_event_id(events[2])

    result = await make_ingestor().ingest(events)

    assert result.accepted == 2
    assert result.event_ids == ["client-id", "", expected_id, ""]
    assert result.rejections == [
        Rejection(1, "user_id", IDS),
        Rejection(3, "type", "must be a known interaction type, not UNSPECIFIED"),
    ]
    assert [(r.topic, r.key) for r in producer.records] == [
        ("interactions", b"u0"), ("interactions", b"u2")]
    first, second = published(producer)
    assert first.event_id == "client-id"
    assert second.event_id == expected_id
    assert first.ingested_at.ToNanoseconds() == int(NOW * 1e9)
    sent = view_event(2, event_id=expected_id)
    sent.ingested_at.FromNanoseconds(int(NOW * 1e9))
    assert producer.records[1].value == sent.SerializeToString(deterministic=True)
    assert metric(registry, "recsys_ingest_events_total",
                  outcome="accepted", reason="none") == 2
    assert metric(registry, "recsys_ingest_events_total",
                  outcome="rejected", reason="user_id") == 1
    assert metric(registry, "recsys_ingest_batch_size_count") == 1
    assert metric(registry, "recsys_ingest_ack_seconds_count") == 1


async def test_all_or_nothing_fails_the_batch_and_publishes_nothing(
    make_ingestor: MakeIngestor, producer: FakeProducer
) -> None:
    events = [view_event(0), view_event(1, item_id=""), view_event(2, user_id="")]
    with pytest.raises(InvalidArgument) as caught:
        await make_ingestor().ingest(events, all_or_nothing=True)
    assert caught.value.message == f"interactions[1].item_id: {IDS} (and 1 more invalid events)"
    assert isinstance(caught.value.details, error_details_pb2.BadRequest)
    assert [(v.field, v.description) for v in caught.value.details.field_violations] == [
        ("interactions[1].item_id", IDS), ("interactions[2].user_id", IDS)]
    assert producer.records == []


@pytest.mark.parametrize("count", [0, 4])
async def test_batch_size_is_limited(make_ingestor: MakeIngestor, count: int) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await make_ingestor(max_batch=3).ingest([view_event(i) for i in range(count)])
    assert caught.value.field == "interactions"
    assert caught.value.reason == f"must hold 1 to 3 events, got {count}"


async def test_create_returns_the_id_and_names_the_invalid_field(
    make_ingestor: MakeIngestor, producer: FakeProducer
) -> None:
    ingestor = make_ingestor()
    assert await ingestor.create(view_event(5)) == derive_event_id(view_event(5))
    undated = view_event(6)
    undated.ClearField("occurred_at")
    with pytest.raises(InvalidArgument) as caught:
        await ingestor.create(undated)
    assert caught.value.field == "interaction.occurred_at"
    assert caught.value.reason == "is required"
    assert len(producer.records) == 1


async def test_unreachable_broker_fails_fast_and_retryable(
    make_ingestor: MakeIngestor, publisher: Publisher, producer: FakeProducer,
    registry: CollectorRegistry,
) -> None:
    publisher._reachable = False
    events = [view_event(0), view_event(1, user_id=""), view_event(2)]
    with pytest.raises(Unavailable) as caught:
        await make_ingestor().ingest(events)
    assert caught.value.retryable
    assert caught.value.details == ingest_pb2.IngestFailure(
        accepted_count=0, not_accepted_indexes=[0, 2])
    assert producer.records == []
    assert metric(registry, "recsys_ingest_events_total",
                  outcome="failed", reason="unavailable") == 2


async def test_a_partly_acknowledged_batch_says_what_was_published(
    make_ingestor: MakeIngestor, producer: FakeProducer
) -> None:
    producer.auto_ack = False
    events = [view_event(0), view_event(1, user_id=""), view_event(2), view_event(3)]
    task = asyncio.create_task(make_ingestor().ingest(events))
    await handed_over(producer, 3)
    assert not task.done()  # the answer waits for the broker
    # The producer's I/O thread acknowledges: callbacks arrive from another thread.
    await asyncio.to_thread(producer.settle, failing=[1])
    with pytest.raises(Unavailable) as caught:
        await task
    assert not caught.value.retryable  # resending would duplicate events 0 and 3
    assert caught.value.details == ingest_pb2.IngestFailure(
        accepted_count=2, not_accepted_indexes=[2])
    assert "expired" in caught.value.message


async def test_an_ack_without_an_offset_is_not_counted_as_published(
    make_ingestor: MakeIngestor, producer: FakeProducer
) -> None:
    producer.auto_ack = False
    task = asyncio.create_task(make_ingestor().ingest([view_event(0), view_event(1)]))
    await handed_over(producer, 2)
    producer.settle(duplicates=[0])
    with pytest.raises(Unavailable) as caught:
        await task
    assert caught.value.details == ingest_pb2.IngestFailure(
        accepted_count=1, not_accepted_indexes=[0])
    assert "acknowledged as a duplicate, without an offset" in caught.value.message


async def test_no_ack_within_the_ack_timeout_is_unavailable(
    make_ingestor: MakeIngestor, producer: FakeProducer
) -> None:
    producer.auto_ack = False
    with pytest.raises(Unavailable) as caught:
        await make_ingestor(ack_timeout_s=0.2).ingest([view_event(0), view_event(1)])
    assert len(producer.records) == 2  # handed over, never acknowledged
    assert caught.value.details == ingest_pb2.IngestFailure(not_accepted_indexes=[0, 1])
    assert caught.value.retryable


async def test_the_client_deadline_wins_over_the_ack_timeout(
    make_ingestor: MakeIngestor, producer: FakeProducer, registry: CollectorRegistry
) -> None:
    producer.auto_ack = False
    with pytest.raises(DeadlineExceeded) as caught:  # not Unavailable: the ack timeout is 10 s
        await make_ingestor(ack_timeout_s=10).ingest([view_event(0)], time_left=1.0)
    assert caught.value.details == ingest_pb2.IngestFailure(not_accepted_indexes=[0])
    assert metric(registry, "recsys_ingest_events_total",
                  outcome="failed", reason="deadline_exceeded") == 1


async def test_a_stream_counts_indexes_across_chunks(
    make_ingestor: MakeIngestor, producer: FakeProducer
) -> None:
    stream = make_ingestor(max_batch=3).stream()
    await stream.add([view_event(0), view_event(1), view_event(2, item_id="")])
    await stream.add([view_event(3, user_id=""), view_event(4)])
    result = await stream.finish()
    assert (result.accepted, result.rejected) == (3, 2)
    assert result.rejections == [Rejection(2, "item_id", IDS), Rejection(3, "user_id", IDS)]
    assert [e.item_id for e in published(producer)] == ["i0", "i1", "i4"]


async def test_a_stream_lists_a_bounded_number_of_rejections(
    make_ingestor: MakeIngestor,
) -> None:
    stream = make_ingestor().stream()
    for chunk in range(3):
        await stream.add([view_event(chunk * 1000 + i, user_id="") for i in range(1000)])
    result = await stream.finish()
    assert result.rejected == 3000
    assert len(result.rejections) == MAX_LISTED_REJECTIONS
    assert result.rejections[-1].index == MAX_LISTED_REJECTIONS - 1


async def test_a_stream_reads_the_next_chunk_once_the_previous_is_acknowledged(
    make_ingestor: MakeIngestor, producer: FakeProducer
) -> None:
    producer.auto_ack = False
    stream = make_ingestor(max_batch=2).stream()
    await stream.add([view_event(0), view_event(1)])
    second = asyncio.create_task(stream.add([view_event(2), view_event(3)]))
    await asyncio.to_thread(producer.settle)
    await second
    assert len(producer.records) == 4
    # The second chunk reached the producer only once the first was acknowledged.
    assert [record.settled_before for record in producer.records] == [0, 0, 2, 2]
    producer.settle()
    assert (await stream.finish()).accepted == 4


async def test_a_stream_failure_lists_the_unacknowledged_stream_positions(
    make_ingestor: MakeIngestor, producer: FakeProducer
) -> None:
    stream = make_ingestor(max_batch=3).stream()
    await stream.add([view_event(0), view_event(1)])  # acknowledged at once
    producer.auto_ack = False
    await stream.add([view_event(2, user_id=""), view_event(3), view_event(4)])
    producer.settle(failing=[3])  # the record of event 4
    with pytest.raises(Unavailable) as caught:
        await stream.add([view_event(5)])  # never read: the stream stops at the failure
    assert caught.value.details == ingest_pb2.IngestFailure(
        accepted_count=3, not_accepted_indexes=[4])
    assert not caught.value.retryable
    assert len(producer.records) == 4


def test_the_largest_failure_detail_fits_the_default_grpc_trailer_limit() -> None:
    """A stream failure lists at most one batch of positions; gRPC clients refuse trailing
    metadata over 8 KiB (base64 for binary headers) unless configured otherwise."""
    worst = ingest_pb2.IngestFailure(
        accepted_count=2**40, not_accepted_indexes=range(2**34, 2**34 + MAX_BATCH_LIMIT))
    status = status_pb2.Status(code=14, message="m" * 200)
    status.details.add().Pack(worst)
    assert len(base64.b64encode(status.SerializeToString())) < 8192 - 512


async def test_a_bad_chunk_size_ends_the_stream_with_what_was_published(
    make_ingestor: MakeIngestor,
) -> None:
    stream = make_ingestor(max_batch=2).stream()
    await stream.add([view_event(0), view_event(1)])
    with pytest.raises(InvalidArgument) as caught:
        await stream.add([view_event(i) for i in range(3)])
    assert caught.value.field == "interactions"
    assert caught.value.details == ingest_pb2.IngestFailure(accepted_count=2)


async def test_a_draining_service_stops_a_stream_before_its_next_chunk(
    make_ingestor: MakeIngestor, producer: FakeProducer
) -> None:
    ingestor = make_ingestor(max_batch=2)
    stream = ingestor.stream()
    await stream.add([view_event(0), view_event(1, user_id="")])
    ingestor.drain()
    with pytest.raises(Unavailable) as caught:
        await stream.add([view_event(2), view_event(3)])
    # Taken in: events 0 and 1 (accepted + listed + rejected); the client resends from 2.
    assert caught.value.details == ingest_pb2.IngestFailure(accepted_count=1)
    assert "events from index 2 on were not taken in" in caught.value.message
    assert not caught.value.retryable  # resending the whole stream would duplicate event 0
    assert len(producer.records) == 1


async def test_a_stream_stopped_before_anything_was_published_may_be_retried(
    make_ingestor: MakeIngestor, producer: FakeProducer
) -> None:
    ingestor = make_ingestor()
    stream = ingestor.stream()
    ingestor.drain()
    with pytest.raises(Unavailable) as caught:
        await stream.add([view_event(0)])
    assert caught.value.details == ingest_pb2.IngestFailure(accepted_count=0)
    assert caught.value.retryable
    assert producer.records == []


async def test_a_draining_service_still_answers_single_calls(
    make_ingestor: MakeIngestor, producer: FakeProducer
) -> None:
    ingestor = make_ingestor()
    ingestor.drain()
    assert await ingestor.create(view_event(0)) == derive_event_id(view_event(0))
    assert (await ingestor.ingest([view_event(1), view_event(2)])).accepted == 2
    assert len(producer.records) == 3
