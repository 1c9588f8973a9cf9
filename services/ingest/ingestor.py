"""The ingest core: validate events, publish the valid ones, answer once the broker acked them.

Shared by the three RPCs and usable without a server. Failures are raised as
services.core.errors; a broker failure carries an `IngestFailure` detail saying what was and
what was not published.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2

from recsys.events.v1 import interaction_pb2
from recsys.ingest.v1 import ingest_pb2
from services.core.errors import DeadlineExceeded, InvalidArgument, Unavailable
from services.ingest.metrics import ACCEPTED, FAILED, REJECTED, IngestMetrics
from services.ingest.publisher import Delivery
from services.ingest.validation import Validator, derive_event_id

log = logging.getLogger(__name__)

#: Rejections listed in a stream's response; the count covers them all.
MAX_LISTED_REJECTIONS = 1000


class Publisher(Protocol):
    """What the core needs from the Kafka side (services.ingest.publisher.Publisher)."""

    @property
    def ready(self) -> bool: ...

    async def wait_ready(self, timeout_s: float) -> bool: ...

    async def publish(self, keys: Sequence[bytes], values: Sequence[bytes]) -> Delivery: ...


@dataclass(frozen=True, slots=True)
class Rejection:
    index: int
    field: str
    reason: str


@dataclass(frozen=True)
class BatchResult:
    accepted: int
    event_ids: list[str]  # request order; "" for a rejected event
    rejections: list[Rejection]


@dataclass(frozen=True)
class StreamResult:
    accepted: int
    rejected: int
    rejections: list[Rejection]  # the first MAX_LISTED_REJECTIONS


@dataclass
class _Chunk:
    """Events validated, stamped and serialized, ready for the producer."""

    keys: list[bytes] = field(default_factory=list)
    values: list[bytes] = field(default_factory=list)
    event_ids: list[str] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    indexes: Sequence[int] = ()  # request/stream position of each of `values`


class _InFlight(NamedTuple):
    delivery: Delivery
    indexes: Sequence[int]  # request/stream position of each record in the delivery


class _Deadline:
    """When a call must answer: the client's deadline, a little early so that the client
    gets our detailed status rather than its own DEADLINE_EXCEEDED (None: no deadline)."""

    def __init__(self, client_timeout_s: float | None) -> None:
        self._time = asyncio.get_running_loop().time
        self._at = math.inf
        if client_timeout_s is not None:
            self._at = self._time() + client_timeout_s - min(0.25, client_timeout_s / 10)

    def wait_s(self, cap_at: float) -> float:
        """Seconds to wait for something due by loop time `cap_at`, within the deadline."""
        return max(0.0, min(cap_at, self._at) - self._time())

    @property
    def passed(self) -> bool:
        return self._time() >= self._at


class _Tracker:
    """The deliveries of one request (or stream) that the broker has yet to acknowledge."""

    def __init__(self, publisher: Publisher, metrics: IngestMetrics, *, ack_timeout_s: float,
                 deadline: _Deadline) -> None:
        self._publisher = publisher
        self._metrics = metrics
        self._ack_timeout_s = ack_timeout_s
        self._deadline = deadline
        self._pending: deque[_InFlight] = deque()
        self.accepted = 0

    async def publish(self, chunk: _Chunk, *, wait_for_broker: bool = False) -> None:
        """Hand `chunk` to the producer. While the broker is unreachable, fail at once, or
        with `wait_for_broker` first wait for it as long as an acknowledgement may take."""
        if not chunk.values:
            return
        if not self._publisher.ready:
            patience = 0.0
            if wait_for_broker:
                patience = self._deadline.wait_s(
                    asyncio.get_running_loop().time() + self._ack_timeout_s)
            if not await self._publisher.wait_ready(patience):
                raise self._failure("the Kafka broker is unreachable", chunk.indexes)
        delivery = await self._publisher.publish(chunk.keys, chunk.values)
        self._pending.append(_InFlight(delivery, chunk.indexes))

    async def settle(self) -> None:
        """Wait until every delivery is acknowledged; raise once one fails, takes longer than
        the ack timeout, or the deadline passes."""
        while self._pending:
            delivery = self._pending[0].delivery
            if not delivery.done.done():
                wait_s = self._deadline.wait_s(delivery.started + self._ack_timeout_s)
                await asyncio.wait((delivery.done,), timeout=wait_s)
            if not delivery.done.done():
                raise self._failure("the broker did not acknowledge in time")
            if delivery.error is not None:
                raise self._failure(f"the broker did not acknowledge: {delivery.error}")
            self._pending.popleft()
            self.accepted += delivery.count
            self._metrics.events.labels(ACCEPTED, "none").inc(delivery.count)
            self._metrics.ack_seconds.observe(delivery.ack_seconds)

    def _failure(self, cause: str, unpublished: Sequence[int] = ()
                 ) -> Unavailable | DeadlineExceeded:
        """The error for the client: how many events were published, which were not."""
        acked, missing = 0, list[int]()
        for delivery, indexes in self._pending:
            unacked = delivery.unacknowledged()
            acked += delivery.count - len(unacked)
            missing.extend(indexes[i] for i in unacked)
        missing.extend(unpublished)
        self._metrics.events.labels(ACCEPTED, "none").inc(acked)
        accepted = self.accepted + acked
        details = ingest_pb2.IngestFailure(accepted_count=accepted, not_accepted_indexes=missing)
        message = f"{cause}; {len(missing)} events were not published"
        if self._deadline.passed:
            self._metrics.events.labels(FAILED, "deadline_exceeded").inc(len(missing))
            return DeadlineExceeded(message, details=details)
        self._metrics.events.labels(FAILED, "unavailable").inc(len(missing))
        # Resending a partly published request would duplicate events: stop gRPC's retries.
        return Unavailable(message, details=details, retryable=accepted == 0)


class Ingestor:
    def __init__(self, *, publisher: Publisher, validator: Validator, metrics: IngestMetrics,
                 max_batch: int, ack_timeout_s: float,
                 clock: Callable[[], float] = time.time) -> None:
        self._publisher = publisher
        self._validator = validator
        self._metrics = metrics
        self.max_batch = max_batch
        self._ack_timeout_s = ack_timeout_s
        self._clock = clock
        self.draining = False

    def drain(self) -> None:
        """The service is shutting down: streams take in no further chunk (StreamIngest.add);
        single calls in flight still finish."""
        self.draining = True

    def check_size(self, count: int) -> None:
        if not 1 <= count <= self.max_batch:
            raise InvalidArgument(
                "interactions", f"must hold 1 to {self.max_batch} events, got {count}")

    async def create(self, event: interaction_pb2.Interaction, *,
                     time_left: float | None = None) -> str:
        """Publish one event and return its id; an invalid event raises InvalidArgument."""
        chunk = self._prepare([event], 0)
        if chunk.rejections:
            rejection = chunk.rejections[0]
            raise InvalidArgument(f"interaction.{rejection.field}", rejection.reason)
        await self._publish(chunk, time_left)
        return chunk.event_ids[0]

    async def ingest(self, events: Sequence[interaction_pb2.Interaction], *,
                     all_or_nothing: bool = False, time_left: float | None = None) -> BatchResult:
        """Publish the valid events of one request; return ids and per-event rejections."""
        self.check_size(len(events))
        chunk = self._prepare(events, 0)
        if chunk.rejections and all_or_nothing:
            self._metrics.events.labels(REJECTED, "all_or_nothing").inc(len(chunk.values))
            raise _all_or_nothing_error(chunk.rejections)
        await self._publish(chunk, time_left)
        return BatchResult(len(chunk.values), chunk.event_ids, chunk.rejections)

    def stream(self, *, time_left: float | None = None) -> StreamIngest:
        """A bulk load: feed chunks with `add`, then `finish`."""
        return StreamIngest(self, self._tracker(time_left))

    async def _publish(self, chunk: _Chunk, time_left: float | None) -> None:
        tracker = self._tracker(time_left)
        await tracker.publish(chunk)
        await tracker.settle()

    def _tracker(self, time_left: float | None) -> _Tracker:
        return _Tracker(self._publisher, self._metrics, ack_timeout_s=self._ack_timeout_s,
                        deadline=_Deadline(time_left))

    def _prepare(self, events: Sequence[interaction_pb2.Interaction], base: int) -> _Chunk:
        """Validate; give each valid event its id and ingested_at; serialize it."""
        self._metrics.batch_size.observe(len(events))
        now = self._clock()
        latest = self._validator.latest_seconds(now)
        stamp = Timestamp()
        stamp.FromNanoseconds(int(now * 1e9))
        chunk = _Chunk()
        problem = self._validator.problem
        keys, values, ids = chunk.keys, chunk.values, chunk.event_ids
        for position, event in enumerate(events):
            found = problem(event, latest)
            if found is not None:
                chunk.rejections.append(Rejection(base + position, *found))
                ids.append("")
                continue
            if not event.event_id:
                event.event_id = derive_event_id(event)
            event.ingested_at.CopyFrom(stamp)
            ids.append(event.event_id)
            keys.append(event.user_id.encode())
            values.append(event.SerializeToString(deterministic=True))
        if chunk.rejections:
            chunk.indexes = [base + i for i, event_id in enumerate(ids) if event_id]
            for reason, count in Counter(r.field for r in chunk.rejections).items():
                self._metrics.events.labels(REJECTED, reason).inc(count)
        else:
            chunk.indexes = range(base, base + len(values))
        return chunk


class StreamIngest:
    """One StreamInteractions call: each chunk is published once the previous one is
    acknowledged (gRPC flow control holds the client meanwhile), so at most `max_batch`
    events are ever unconfirmed and a failure's detail stays small."""

    def __init__(self, ingestor: Ingestor, tracker: _Tracker) -> None:
        self._ingestor = ingestor
        self._tracker = tracker
        self._next_index = 0
        self._rejected = 0
        self._rejections: list[Rejection] = []

    async def add(self, events: Sequence[interaction_pb2.Interaction]) -> None:
        if self._ingestor.draining:
            await self._stop_for_shutdown()
        try:
            self._ingestor.check_size(len(events))
        except InvalidArgument as exc:
            # Earlier chunks may be on the topic: settle them and say how many.
            await self._tracker.settle()
            exc.details = ingest_pb2.IngestFailure(accepted_count=self._tracker.accepted)
            raise
        # The previous chunk is acknowledged before this one is taken in, so a failure lists
        # at most one chunk, and every event taken in and not listed was published or rejected.
        await self._tracker.settle()
        chunk = self._ingestor._prepare(events, self._next_index)
        self._next_index += len(events)
        self._rejected += len(chunk.rejections)
        room = MAX_LISTED_REJECTIONS - len(self._rejections)
        self._rejections.extend(chunk.rejections[:room])
        # A bulk load rides through a broker restart rather than starting over.
        await self._tracker.publish(chunk, wait_for_broker=True)

    async def finish(self) -> StreamResult:
        await self._tracker.settle()
        return StreamResult(self._tracker.accepted, self._rejected, self._rejections)

    async def _stop_for_shutdown(self) -> None:
        """End the stream before this chunk: settle what was taken in, then say where the
        client should resume (on another replica) in the usual IngestFailure terms."""
        await self._tracker.settle()
        accepted = self._tracker.accepted
        log.info("stream stopped: the service is shutting down",
                 extra={"accepted": accepted, "next_index": self._next_index})
        raise Unavailable(
            f"the service is shutting down: events from index {self._next_index} on were not "
            "taken in; send them again", details=ingest_pb2.IngestFailure(accepted_count=accepted),
            retryable=accepted == 0)


def _all_or_nothing_error(rejections: Sequence[Rejection]) -> InvalidArgument:
    """INVALID_ARGUMENT naming the first bad event; a BadRequest detail lists every one."""
    first = rejections[0]
    more = f" (and {len(rejections) - 1} more invalid events)" if len(rejections) > 1 else ""
    violations = [
        error_details_pb2.BadRequest.FieldViolation(
            field=f"interactions[{r.index}].{r.field}", description=r.reason)
        for r in rejections
    ]
    return InvalidArgument(
        f"interactions[{first.index}].{first.field}", first.reason + more,
        details=error_details_pb2.BadRequest(field_violations=violations))
