"""gRPC's transparent retries (the project's client policy retries UNAVAILABLE) must never
resend a batch that was partly published: that would put its events on the topic twice.

A partial broker failure cannot be produced on demand with a real broker, so this one test
swaps the running server's Kafka producer for a fake that fails one record.
"""

from __future__ import annotations

import asyncio
from typing import cast

import grpc
import pytest

from recsys.ingest.v1 import ingest_pb2
from scripts.localstack.components import TansuBroker
from services.cli.ingest import ingest_failure
from services.ingest.app import IngestApp
from services.ingest.servicer import SERVICE
from tests.support.events import rating_event
from tests.support.fake_producer import FakeProducer
from tests.support.ingest_server import start_ingest
from tests.support.polling import eventually

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
            interactions=[rating_event(n) for n in range(3)]), timeout=10)

        def fail_the_second_record_once_sent() -> None:  # as the producer's I/O thread would
            eventually(lambda: len(producer.records) == 3, timeout=10,
                       what="the batch handed to the producer")
            producer.settle(failing=[1])

        await asyncio.to_thread(fail_the_second_record_once_sent)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert ("grpc-retry-pushback-ms", "-1") in list(caught.value.trailing_metadata() or ())
        assert ingest_failure(caught.value) == ingest_pb2.IngestFailure(
            accepted_count=2, not_accepted_indexes=[1])
        # A transparent retry is made before the client sees the call's status: had there
        # been one, the server would have started the RPC twice and sent the records again.
        assert ingest.metric("grpc_server_started_total", grpc_type="unary",
                             grpc_service=SERVICE, grpc_method="BatchCreateInteractions") == 1
        assert len(producer.records) == 3
    finally:
        await ingest.stop()
