"""Rules of the wire contract that more than one service checks: ids and timestamps.

IngestService refuses an event that breaks them and the recommender a query that does, so a
user or item id that one service accepts is one that every service accepts. The protos'
comments (recsys.events.v1.Interaction, recsys.recommender.v1) state the same rules.
"""

from __future__ import annotations

from datetime import UTC, datetime

#: A user, item or event id is 1 to MAX_ID_CHARS printable characters (`str.isprintable`: no
#: control characters, line breaks or separators other than the space).
MAX_ID_CHARS = 128
ID_RULE = f"must be 1 to {MAX_ID_CHARS} printable characters"

#: The earliest occurred_at accepted by default (RECSYS_INGEST_MIN_OCCURRED_AT): older events
#: are taken for a client's clock or unit error.
MIN_OCCURRED_AT = datetime(1995, 1, 1, tzinfo=UTC)


def id_problem(value: str) -> str | None:
    """What is wrong with `value` as a user or item id, or None when it follows the rule."""
    if not value:
        return "is required"
    if len(value) > MAX_ID_CHARS:
        return f"at most {MAX_ID_CHARS} characters, got {len(value)}"
    if not value.isprintable():
        return ID_RULE
    return None
