"""Valid Interaction events for tests, each unique by its number `n`; `fields` override."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from recsys.events.v1 import interaction_pb2

#: The clock of the ingest core's unit tests.
NOW = datetime(2026, 6, 1, tzinfo=UTC).timestamp()


def view_event(n: int, **fields: object) -> interaction_pb2.Interaction:
    """A view by one of seven users ("u0".."u6") of item "i{n}", an hour before NOW."""
    values: dict[str, object] = {
        "user_id": f"u{n % 7}", "item_id": f"i{n}", "type": interaction_pb2.INTERACTION_TYPE_VIEW}
    values.update(fields)
    event = interaction_pb2.Interaction(**values)  # type: ignore[arg-type]
    event.occurred_at.FromSeconds(int(NOW) - 3600 + n)
    return event


def rating_event(n: int, **fields: object) -> interaction_pb2.Interaction:
    """A rating by one of thirteen users of item "item-{n}", about an hour before the real
    clock (what a running IngestService accepts)."""
    values: dict[str, object] = {
        "user_id": f"user-{n % 13}", "item_id": f"item-{n}",
        "type": interaction_pb2.INTERACTION_TYPE_RATING, "value": 0.5 + (n % 10) / 2}
    values.update(fields)
    event = interaction_pb2.Interaction(**values)  # type: ignore[arg-type]
    event.occurred_at.FromNanoseconds(time.time_ns() - 3_600_000_000_000 + n)
    return event
