"""Publishes serialized events to the interactions topic and reports when the broker acked them.

kafka-python is thread-based: `send()` may block (metadata, a full buffer) and acknowledgements
arrive as callbacks on the producer's I/O thread. Sends therefore run on one dedicated thread,
and each batch gets one asyncio future that the callbacks count down, resolved through
`call_soon_threadsafe` once, so the event loop never blocks and per-event overhead stays at
two callback registrations, an offset check and one counter step.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError
from kafka.producer.future import RecordMetadata

from services.core.kafka import PLAINTEXT, KafkaSecurity, producer_config

log = logging.getLogger(__name__)


class Delivery:
    """The broker's verdict on one batch of records, filled in from the producer's I/O thread."""

    __slots__ = ("_loop", "_on_error", "_settled", "ack_seconds", "count", "done", "error",
                 "futures", "started")

    def __init__(self, loop: asyncio.AbstractEventLoop, count: int,
                 on_error: Callable[[BaseException], None] | None = None) -> None:
        self._loop = loop
        self._on_error = on_error
        self.count = count
        self.started = loop.time()
        #: Seconds from creation until the last record was settled.
        self.ack_seconds = 0.0
        # next() on itertools.count is atomic under the GIL: no lock on the hot path.
        self._settled = itertools.count(1)
        #: Resolves (never fails) once every record is acknowledged or failed.
        self.done: asyncio.Future[None] = loop.create_future()
        #: One kafka future per record handed to the producer, in order.
        self.futures: list[Any] = []
        #: The last producer error, if any record failed.
        self.error: BaseException | None = None
        if count == 0:
            self.done.set_result(None)

    def acked(self, metadata: RecordMetadata) -> None:
        if metadata.offset < 0:
            # An ack without an offset: kafka-python turns DUPLICATE_SEQUENCE_NUMBER into
            # success, and Tansu on S3 answers it for a batch it lost in a crash. Unconfirmed.
            self.failed(UnconfirmedWrite(f"{metadata.topic_partition}: a retried batch was "
                                         "acknowledged as a duplicate, without an offset"))
        else:
            self._settle()

    def failed(self, error: BaseException) -> None:
        self.error = error
        if self._on_error is not None:
            self._on_error(error)
        self._settle()

    def abandon(self, error: BaseException) -> None:
        """Settle the records that never reached the producer (send() raised)."""
        self.error = error
        for _ in range(self.count - len(self.futures)):
            self._settle()

    def _settle(self) -> None:
        if next(self._settled) == self.count:
            self._loop.call_soon_threadsafe(self._resolve)

    def _resolve(self) -> None:
        if not self.done.done():
            self.ack_seconds = self._loop.time() - self.started
            self.done.set_result(None)

    def unacknowledged(self) -> list[int]:
        """Positions (within this batch) of the records the broker has not acknowledged
        with an offset."""
        pending = [i for i, future in enumerate(self.futures)
                   if not (future.succeeded() and future.value.offset >= 0)]
        pending.extend(range(len(self.futures), self.count))
        return pending


class UnconfirmedWrite(KafkaError):
    """The broker acknowledged a record without confirming where it was written."""


class Publisher:
    """One idempotent, acks=all producer for the topic, plus an admin client that creates the
    topic and tells whether the broker is reachable.

    `check()` (called periodically by the app) keeps `ready` current. After a failed delivery
    the producer is replaced at the next successful check: kafka-python can leave an
    idempotent producer in a fatal state (e.g. when a restarted broker forgot its producer id).
    """

    def __init__(self, *, bootstrap: str, topic: str, partitions: int, replication: int,
                 check_timeout_s: float = 3.0, client_id: str = "ingest",
                 security: KafkaSecurity = PLAINTEXT,
                 topic_configs: Mapping[str, str] | None = None) -> None:
        self.topic = topic
        self._bootstrap = bootstrap
        self._security = security
        self._new_topic = NewTopic(topic, partitions, replication,
                                   topic_configs=dict(topic_configs or {}))
        self._check_timeout_ms = int(check_timeout_s * 1000)
        self._client_id = client_id
        self._producer: KafkaProducer | None = None
        self._admin: KafkaAdminClient | None = None
        self._reachable = False
        self._ready = asyncio.Event()  # set while `ready`, for callers that wait for it
        self._delivery_failed = False
        self._closed = False
        # Separate threads: a slow reachability check must never hold up sends.
        self._sender = ThreadPoolExecutor(1, thread_name_prefix="ingest-send")
        self._checker = ThreadPoolExecutor(1, thread_name_prefix="ingest-check")

    @property
    def ready(self) -> bool:
        """The broker answered the last check and a producer is connected."""
        return self._reachable and self._producer is not None

    async def wait_ready(self, timeout_s: float) -> bool:
        """Whether the publisher is ready now or becomes ready within `timeout_s`."""
        if not self.ready:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ready.wait(), timeout_s)
        return self.ready

    async def check(self) -> None:
        """Ensure the broker answers and the topic exists (create it if missing); raises
        KafkaError (or OSError) when the broker cannot be reached."""
        try:
            await asyncio.get_running_loop().run_in_executor(self._checker, self._check)
        except BaseException:
            self._reachable = False
            self._ready.clear()
            raise
        self._reachable = True
        self._ready.set()

    def _check(self) -> None:
        if self._admin is None:
            self._admin = KafkaAdminClient(
                **self._security.client_options(),
                bootstrap_servers=self._bootstrap,
                client_id=f"recsys-{self._client_id}-admin",
                request_timeout_ms=self._check_timeout_ms,
                bootstrap_timeout_ms=self._check_timeout_ms,
                reconnect_backoff_max_ms=1_000,
            )
        if self.topic not in self._admin.list_topics():
            try:
                self._admin.create_topics([self._new_topic], timeout_ms=self._check_timeout_ms)
                log.info("created topic", extra={"topic": self.topic,
                                                 "partitions": self._new_topic.num_partitions})
            except TopicAlreadyExistsError:
                pass
        if self._delivery_failed:
            self._delivery_failed = False
            log.info("replacing the producer after a failed delivery")
            self._close_producer(timeout_s=self._check_timeout_ms / 1000)
        if self._producer is None:
            config = producer_config(self._bootstrap, client_id=self._client_id,
                                     security=self._security)
            self._producer = KafkaProducer(
                **config, bootstrap_timeout_ms=self._check_timeout_ms)

    def _on_delivery_error(self, _error: BaseException) -> None:
        self._delivery_failed = True

    async def publish(self, keys: Sequence[bytes], values: Sequence[bytes]) -> Delivery:
        """Hand the records to the producer; the returned Delivery resolves on the acks."""
        loop = asyncio.get_running_loop()
        delivery = Delivery(loop, len(values), self._on_delivery_error)
        if values:
            await loop.run_in_executor(self._sender, self._send, delivery, keys, values)
        return delivery

    def _send(self, delivery: Delivery, keys: Sequence[bytes], values: Sequence[bytes]) -> None:
        producer = self._producer
        if producer is None:
            delivery.abandon(KafkaError("not connected to the broker yet"))
            return
        send, topic = producer.send, self.topic
        acked, failed, append = delivery.acked, delivery.failed, delivery.futures.append
        try:
            for key, value in zip(keys, values, strict=True):
                future = send(topic, value=value, key=key)
                future.add_callback(acked)
                future.add_errback(failed)
                append(future)
        except KafkaError as exc:  # metadata or buffer space not available within max_block_ms
            delivery.abandon(exc)

    async def close(self, timeout_s: float = 5.0) -> None:
        """Flush what is buffered (bounded), then close the clients and threads; idempotent."""
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._sender, self._close_producer, timeout_s)
        await loop.run_in_executor(self._checker, self._close_admin)
        self._sender.shutdown()
        self._checker.shutdown()

    def _close_producer(self, timeout_s: float) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            producer.close(timeout=timeout_s)

    def _close_admin(self) -> None:
        admin, self._admin = self._admin, None
        if admin is not None:
            admin.close()
