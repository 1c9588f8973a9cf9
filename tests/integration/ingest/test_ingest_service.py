"""IngestService against a real broker: what each RPC puts on the topic, and what it rejects."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections import defaultdict

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from prometheus_client.parser import text_string_to_metric_families

from recsys.events.v1 import interaction_pb2
from recsys.ingest.v1 import ingest_pb2
from scripts.localstack.components import TansuBroker
from services.ingest.validation import derive_event_id
from tests.support.events import rating_event
from tests.support.ingest_server import Ingest, chunks
from tests.support.topics import read_topic

pytestmark = pytest.mark.integration

IDS = "must be 1 to 128 printable characters"


async def test_every_rpc_puts_its_events_on_the_topic_byte_for_byte(
    ingest: Ingest, kafka: TansuBroker
) -> None:
    single = rating_event(0, context={"device": "ios", "page": "home"})
    batch = [rating_event(n, event_id=f"client-{n}" if n % 2 else "") for n in range(1, 51)]
    streamed = [rating_event(n, type=interaction_pb2.INTERACTION_TYPE_VIEW, value=2.0)
                for n in range(51, 351)]
    before = time.time_ns()

    created = await ingest.stub.CreateInteraction(
        ingest_pb2.CreateInteractionRequest(interaction=single), timeout=10)
    batched = await ingest.stub.BatchCreateInteractions(
        ingest_pb2.BatchCreateInteractionsRequest(interactions=batch), timeout=10)
    stream = await ingest.stub.StreamInteractions(chunks(streamed, 100), timeout=30)
    after = time.time_ns()

    assert created.event_id == derive_event_id(single)
    assert batched.accepted_count == 50 and not batched.rejections
    assert stream.accepted_count == 300 and stream.rejected_count == 0
    sent = {created.event_id: single}
    sent.update(zip(batched.event_ids, batch, strict=True))
    sent.update((derive_event_id(e), e) for e in streamed)  # the stream returns no ids
    assert batched.event_ids[:2] == ["client-1", derive_event_id(batch[1])]

    records = await asyncio.to_thread(read_topic, kafka.bootstrap, ingest.topic)
    assert len(records) == len(sent) == 351
    partitions: dict[str, set[int]] = defaultdict(set)
    for record in records:
        on_topic = interaction_pb2.Interaction.FromString(record.value)
        expected = interaction_pb2.Interaction()
        expected.CopyFrom(sent.pop(on_topic.event_id))
        expected.event_id = on_topic.event_id
        assert before <= on_topic.ingested_at.ToNanoseconds() <= after
        expected.ingested_at.CopyFrom(on_topic.ingested_at)
        assert record.value == expected.SerializeToString(deterministic=True)
        assert record.key == expected.user_id.encode()
        partitions[expected.user_id].add(record.partition)
    assert not sent  # every event exactly once
    assert all(len(p) == 1 for p in partitions.values())  # one user, one partition


async def test_a_mixed_batch_gets_exact_rejections_and_publishes_the_rest(
    ingest: Ingest, kafka: TansuBroker
) -> None:
    events = [rating_event(n) for n in range(8)]
    events[1].user_id = ""
    events[3].type = interaction_pb2.INTERACTION_TYPE_UNSPECIFIED
    events[4].value = 7.0
    events[5].occurred_at.FromSeconds(int(time.time()) + 3600)
    events[6].context.update({f"k{i}": "v" for i in range(17)})

    answer = await ingest.stub.BatchCreateInteractions(
        ingest_pb2.BatchCreateInteractionsRequest(interactions=events), timeout=10)

    assert [(r.index, r.field, r.reason) for r in answer.rejections] == [
        (1, "user_id", IDS),
        (3, "type", "must be a known interaction type, not UNSPECIFIED"),
        (4, "value", "must be 0.5 to 5 for a rating"),
        (5, "occurred_at", "must not be more than 300 s in the future"),
        (6, "context", "must have at most 16 entries"),
    ]
    assert answer.accepted_count == 3
    good = [0, 2, 7]
    assert [i for i, event_id in enumerate(answer.event_ids) if event_id] == good
    records = await asyncio.to_thread(read_topic, kafka.bootstrap, ingest.topic)
    assert sorted(interaction_pb2.Interaction.FromString(r.value).event_id
                  for r in records) == sorted(answer.event_ids[i] for i in good)


async def test_all_or_nothing_rejects_the_whole_batch(
    ingest: Ingest, kafka: TansuBroker
) -> None:
    events = [rating_event(0), rating_event(1, item_id="")]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await ingest.stub.BatchCreateInteractions(ingest_pb2.BatchCreateInteractionsRequest(
            interactions=events, all_or_nothing=True), timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == f"interactions[1].item_id: {IDS}"
    status = rpc_status.from_call(caught.value)
    assert status is not None
    violations = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(violations)
    assert [v.field for v in violations.field_violations] == ["interactions[1].item_id"]
    records = await asyncio.to_thread(read_topic, kafka.bootstrap, ingest.topic)
    assert records == []


@pytest.mark.parametrize(("count", "message"), [
    (0, "interactions: must hold 1 to 1000 events, got 0"),
    (1001, "interactions: must hold 1 to 1000 events, got 1001"),
])
async def test_the_batch_limit_is_enforced(ingest: Ingest, count: int, message: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await ingest.stub.BatchCreateInteractions(ingest_pb2.BatchCreateInteractionsRequest(
            interactions=[rating_event(n) for n in range(count)]), timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == message


async def test_an_invalid_single_event_names_its_field(ingest: Ingest) -> None:
    undated = rating_event(0)
    undated.ClearField("occurred_at")
    for request, message in [
        (ingest_pb2.CreateInteractionRequest(), "interaction: is required"),
        (ingest_pb2.CreateInteractionRequest(interaction=undated),
         "interaction.occurred_at: is required"),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await ingest.stub.CreateInteraction(request, timeout=10)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert caught.value.details() == message


async def test_domain_metrics_count_outcomes_sizes_and_ack_latency(ingest: Ingest) -> None:
    events = [rating_event(n) for n in range(5)]
    events[2].user_id = ""
    await ingest.stub.BatchCreateInteractions(
        ingest_pb2.BatchCreateInteractionsRequest(interactions=events), timeout=10)

    body = await asyncio.to_thread(lambda: urllib.request.urlopen(
        f"http://127.0.0.1:{ingest.running.metrics_port}/metrics", timeout=5).read().decode())
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(body) for s in family.samples}
    assert samples["recsys_ingest_events_total",
                   (("outcome", "accepted"), ("reason", "none"))] == 4
    assert samples["recsys_ingest_events_total",
                   (("outcome", "rejected"), ("reason", "user_id"))] == 1
    assert samples["recsys_ingest_batch_size_sum", ()] == 5
    assert samples["recsys_ingest_ack_seconds_count", ()] == 1
