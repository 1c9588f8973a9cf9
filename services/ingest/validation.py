"""Per-event validation and content-derived event ids.

The `recsys.events.v1.Interaction` message is the domain type here: it is what the topic
carries, so events are checked and published as they arrived, without a conversion per event.
This code runs for every event ingested; keep it to attribute reads and comparisons (so the
id rule of services/core/contract.py is spelled inline here, with its constants, rather than
called: tests/unit/ingest/test_validation.py checks that both agree).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from recsys.events.v1 import interaction_pb2
from services.core.contract import ID_RULE, MAX_ID_CHARS, MIN_OCCURRED_AT

MAX_CONTEXT_ENTRIES = 16
MAX_CONTEXT_KEY_CHARS = 64
MAX_CONTEXT_VALUE_CHARS = 256

RATING = interaction_pb2.INTERACTION_TYPE_RATING
KNOWN_TYPES = frozenset(
    v for v in interaction_pb2.InteractionType.values()
    if v != interaction_pb2.INTERACTION_TYPE_UNSPECIFIED
)


class Problem(NamedTuple):
    """Why an event is invalid: the offending field and a reason for people."""

    field: str
    reason: str


@dataclass(frozen=True, kw_only=True)
class Limits:
    """The configurable bounds (the fixed ones are the constants above)."""

    rating_min: float = 0.5
    rating_max: float = 5.0
    max_weight: float = 1e6
    max_future_s: float = 300.0
    min_occurred_at: datetime = MIN_OCCURRED_AT


class Validator:
    """Checks one event at a time against `Limits`; the reasons are built once, here."""

    def __init__(self, limits: Limits) -> None:
        self._rating_min, self._rating_max = limits.rating_min, limits.rating_max
        self._max_weight = limits.max_weight
        self._max_future_s = limits.max_future_s
        self._min_seconds = int(limits.min_occurred_at.timestamp())
        floor = limits.min_occurred_at.isoformat()
        self._bad_user = Problem("user_id", ID_RULE)
        self._bad_item = Problem("item_id", ID_RULE)
        self._bad_event_id = Problem(
            "event_id", f"must be empty or at most {MAX_ID_CHARS} printable characters")
        self._bad_type = Problem("type", "must be a known interaction type, not UNSPECIFIED")
        self._no_rating = Problem("value", "is required for a rating")
        self._bad_rating = Problem(
            "value", f"must be {limits.rating_min:g} to {limits.rating_max:g} for a rating")
        self._bad_weight = Problem("value", f"must be 0 to {limits.max_weight:g}")
        self._no_time = Problem("occurred_at", "is required")
        self._bad_nanos = Problem("occurred_at", "nanos must be 0 to 999,999,999")
        self._too_old = Problem("occurred_at", f"must not be before {floor}")
        self._too_new = Problem(
            "occurred_at", f"must not be more than {limits.max_future_s:g} s in the future")
        self._big_context = Problem(
            "context", f"must have at most {MAX_CONTEXT_ENTRIES} entries")
        self._bad_context_key = Problem(
            "context", f"keys must be 1 to {MAX_CONTEXT_KEY_CHARS} characters")
        self._bad_context_value = Problem(
            "context", f"values must be at most {MAX_CONTEXT_VALUE_CHARS} characters")

    def latest_seconds(self, now_s: float) -> float:
        """The newest occurred_at (epoch seconds) accepted at server time `now_s`."""
        return now_s + self._max_future_s

    def problem(  # noqa: PLR0912 - one flat pass: this runs for every event
        self, event: interaction_pb2.Interaction, latest_s: float
    ) -> Problem | None:
        """The first thing wrong with `event`, or None; `latest_s` from `latest_seconds`."""
        user = event.user_id
        if not 0 < len(user) <= MAX_ID_CHARS or not user.isprintable():
            return self._bad_user
        item = event.item_id
        if not 0 < len(item) <= MAX_ID_CHARS or not item.isprintable():
            return self._bad_item
        event_id = event.event_id
        if event_id and (len(event_id) > MAX_ID_CHARS or not event_id.isprintable()):
            return self._bad_event_id
        kind = event.type
        if kind not in KNOWN_TYPES:
            return self._bad_type
        if event.HasField("value"):
            value = event.value
            if kind == RATING:
                if not self._rating_min <= value <= self._rating_max:  # NaN fails too
                    return self._bad_rating
            elif not 0.0 <= value <= self._max_weight:
                return self._bad_weight
        elif kind == RATING:
            return self._no_rating
        if not event.HasField("occurred_at"):
            return self._no_time
        occurred = event.occurred_at
        if not 0 <= occurred.nanos < 1_000_000_000:
            return self._bad_nanos
        seconds = occurred.seconds
        if seconds < self._min_seconds:
            return self._too_old
        if seconds > latest_s:
            return self._too_new
        context = event.context
        if context:
            return self._context_problem(context)
        return None

    def _context_problem(self, context: Mapping[str, str]) -> Problem | None:
        if len(context) > MAX_CONTEXT_ENTRIES:
            return self._big_context
        for key, value in context.items():
            if not 0 < len(key) <= MAX_CONTEXT_KEY_CHARS:
                return self._bad_context_key
            if len(value) > MAX_CONTEXT_VALUE_CHARS:
                return self._bad_context_value
        return None


def derive_event_id(event: interaction_pb2.Interaction) -> str:
    """A stable id from the event's content: the same content always gives the same id.

    The hex BLAKE2b-128 digest of the UTF-8 text "<length>:<part>" (length in characters) for
    each of user, item, type number, value (Python repr; empty when absent, unlike 0),
    occurred_at ("<seconds>.<nanos, 9 digits>") and then each context key and value in key
    order; the length prefixes keep different events apart. Spelled out rather than a
    protobuf serialization (not canonical) so the id survives library upgrades.
    """
    occurred = event.occurred_at
    user, item, kind = event.user_id, event.item_id, str(event.type)
    value = repr(event.value) if event.HasField("value") else ""
    stamp = f"{occurred.seconds}.{occurred.nanos:09d}"
    payload = (f"{len(user)}:{user}{len(item)}:{item}{len(kind)}:{kind}"
               f"{len(value)}:{value}{len(stamp)}:{stamp}")
    if event.context:
        payload += "".join(f"{len(k)}:{k}{len(v)}:{v}" for k, v in sorted(event.context.items()))
    return hashlib.blake2b(payload.encode(), digest_size=16).hexdigest()
