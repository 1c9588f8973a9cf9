"""Rules of the wire contract that more than one service checks: ids, timestamps, and the
catalogue's categories and labels.

IngestService refuses an event that breaks them and the recommender a query that does, so a
user or item id that one service accepts is one that every service accepts. The protos'
comments (recsys.events.v1.Interaction, recsys.recommender.v1) state the same rules.
"""

from __future__ import annotations

from collections.abc import Sequence
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


#: A catalogue item's categories (and a query's category filter) and labels: how many, and
#: how long each, in printable characters.
MAX_CATEGORIES = 16
MAX_CATEGORY_CHARS = 64
MAX_LABELS = 64
MAX_LABEL_CHARS = 128


def tags_problem(values: Sequence[str], *, most: int, max_chars: int) -> str | None:
    """What is wrong with a list of categories or labels (at most `most`, each 1 to
    `max_chars` printable characters), or None."""
    if len(values) > most:
        return f"at most {most} entries, got {len(values)}"
    for n, value in enumerate(values):
        if not 0 < len(value) <= max_chars or not value.isprintable():
            return f"entry {n} must be 1 to {max_chars} printable characters"
    return None


def categories_problem(values: Sequence[str]) -> str | None:
    return tags_problem(values, most=MAX_CATEGORIES, max_chars=MAX_CATEGORY_CHARS)


def labels_problem(values: Sequence[str]) -> str | None:
    return tags_problem(values, most=MAX_LABELS, max_chars=MAX_LABEL_CHARS)
