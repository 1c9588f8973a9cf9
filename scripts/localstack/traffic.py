"""Steady client traffic through the edge of a running local stack: Recommend for known users
and CreateInteraction for new events, each at its own rate, on threads, recording what every
call got. The rolling-update test and the chaos run (scripts/bench/chaos.py) drive the stack
with it.

    with Traffic(channel, recommend_per_s=40, interactions_per_s=10) as traffic:
        ...                                   # restart things
    traffic.report.failed                      # calls that failed, by method and status
    traffic.report.acknowledged                # event ids ingest acknowledged
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

import grpc
from grpc_status import rpc_status

from recsys.events.v1 import interaction_pb2
from recsys.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from recsys.recommender.v1 import recommender_pb2, recommender_pb2_grpc

#: Each call's deadline (a call that takes longer counts as failed).
DEADLINE_S = 5.0


@dataclass
class Call:
    """One call: when it ended (monotonic seconds), how long it took, its method, its status
    code and the type names of the status' details (e.g. recsys.ingest.v1.IngestFailure)."""

    at: float
    seconds: float
    method: str
    code: str
    details: tuple[str, ...] = ()


@dataclass
class Report:
    calls: list[Call] = field(default_factory=list)
    #: (when, event id) of every event ingest acknowledged, in order.
    acks: list[tuple[float, str]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, call: Call, *acknowledged: str) -> None:
        with self._lock:
            self.calls.append(call)
            self.acks.extend((call.at, event_id) for event_id in acknowledged)

    @property
    def acknowledged(self) -> list[str]:
        with self._lock:
            return [event_id for _, event_id in self.acks]

    def count(self, method: str | None = None, *, ok: bool | None = None) -> int:
        return sum(1 for call in self.between() if (method is None or call.method == method)
                   and (ok is None or (call.code == "OK") == ok))

    def between(self, start: float = 0.0, end: float = float("inf")) -> list[Call]:
        """The calls that ended in [start, end) (monotonic seconds)."""
        with self._lock:
            return [call for call in self.calls if start <= call.at < end]

    @property
    def failed(self) -> Counter[tuple[str, str]]:
        """Failed calls by (method, status code)."""
        return Counter((call.method, call.code) for call in self.between()
                       if call.code != "OK")


class Traffic:
    """Two paced clients on one channel (to Envoy: TLS and a token are the channel's)."""

    def __init__(self, channel: grpc.Channel, *, recommend_per_s: float,
                 interactions_per_s: float, users: int = 2000, run: str = "traffic") -> None:
        self.report = Report()
        self._recommender = recommender_pb2_grpc.RecommenderServiceStub(channel)
        self._ingest = ingest_pb2_grpc.IngestServiceStub(channel)
        self._users = users
        self._run = run
        self._stopping = threading.Event()
        self._threads = [
            threading.Thread(target=self._paced, args=(self._recommend, recommend_per_s),
                             name="traffic-recommend", daemon=True),
            threading.Thread(target=self._paced, args=(self._interact, interactions_per_s),
                             name="traffic-ingest", daemon=True),
        ]
        self._events = itertools.count()

    def __enter__(self) -> Self:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stopping.set()
        for thread in self._threads:
            thread.join(DEADLINE_S * 2)

    def _paced(self, call: Callable[[], None], per_s: float) -> None:
        """`call` every 1/per_s seconds, on schedule (a slow call is not made up for)."""
        interval = 1.0 / per_s
        due = time.monotonic()
        while not self._stopping.is_set():
            call()
            due = max(due + interval, time.monotonic())
            self._stopping.wait(due - time.monotonic())

    def _recommend(self) -> None:
        request = recommender_pb2.RecommendRequest(
            user_id=f"u{random.randrange(self._users)}", k=10)
        self._record("Recommend", lambda: self._recommender.Recommend(request,
                                                                      timeout=DEADLINE_S))

    def _interact(self) -> None:
        n = next(self._events)
        event = interaction_pb2.Interaction(
            user_id=f"u{random.randrange(self._users)}", item_id=f"{self._run}-item-{n}",
            type=interaction_pb2.INTERACTION_TYPE_CLICK)
        event.occurred_at.GetCurrentTime()
        request = ingest_pb2.CreateInteractionRequest(interaction=event)
        self._record("CreateInteraction", lambda: self._ingest.CreateInteraction(
            request, timeout=DEADLINE_S).event_id)

    def _record(self, method: str, call: Callable[[], object]) -> None:
        started = time.monotonic()
        try:
            answer = call()
        except grpc.RpcError as error:
            ended = time.monotonic()
            self.report.add(Call(ended, ended - started, method, error.code().name,
                                 detail_types(error)))
            return
        ended = time.monotonic()
        self.report.add(Call(ended, ended - started, method, "OK"),
                        *([answer] if isinstance(answer, str) else []))


def detail_types(error: grpc.RpcError) -> tuple[str, ...]:
    """The full type names of a failed call's rich status details."""
    status = rpc_status.from_call(error)
    return tuple(detail.TypeName() for detail in status.details) if status else ()
