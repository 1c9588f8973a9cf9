"""gRPC's transparent retries (the project's client policy retries UNAVAILABLE) must never
resend a batch that was partly published: that would put its events on the topic twice.

A partial broker failure cannot be produced on demand with a real broker, so this one test
swaps the running server's Kafka producer for a fake that fails one record.
"""

from __future__ import annotations

import asyncio
import time
from typing import cast

import grpc
import pytest

from recsys.ingest.v1 import ingest_pb2
from scripts.localstack.components import TansuBroker
from services.cli.ingest import ingest_failure
from services.ingest.app import IngestApp
from tests.integration.ingest.support import make_event, start_ingest
from tests.unit.ingest.support import FakeProducer

pytestmark = pytest.mark.integration


async def test_a_partly_published_batch_is_answered_once_and_not_retried(
    kafka: TansuBroker,
) -> None:
    ingest = await start_ingest(kafka.bootstrap)
    producer = FakeProducer()
    producer.auto_ack = False
    cast(IngestApp, ingest.running.app).publisher._producer = producer
    try:
        call = ingest.stub.BatchCreateInteractions(ingest_pb2.BatchCreateInteractionsRequest(
            interactions=[make_event(n) for n in range(3)]), timeout=10)

        def fail_the_second_record_once_sent() -> None:  # as the producer's I/O thread would
            while len(producer.records) < 3:
                time.sleep(0.01)
            producer.settle(failing=[1])

        await asyncio.to_thread(fail_the_second_record_once_sent)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert ("grpc-retry-pushback-ms", "-1") in list(caught.value.trailing_metadata() or ())
        assert ingest_failure(caught.value) == ingest_pb2.IngestFailure(
            accepted_count=2, not_accepted_indexes=[1])
        await asyncio.sleep(0.5)  # time for a retry, had there been one
        assert len(producer.records) == 3
    finally:
        await ingest.stop()
