"""What makes a catalogue item or user profile valid: the contract's rules (ids, categories,
labels: services/core/contract.py) and the catalogue's own (title, availability window).
Reasons are for people and name the field, as an interaction's do."""

from __future__ import annotations

from recsys.events.v1.catalog_pb2 import Item, User
from services.core.contract import categories_problem, id_problem, labels_problem
from services.ingest.validation import Problem

MAX_TITLE_CHARS = 256
MAX_REQUESTED_BY_CHARS = 128


def item_problem(item: Item) -> Problem | None:
    """The first thing wrong with `item`, or None."""
    for field, problem in (("item_id", id_problem(item.item_id)),
                           ("categories", categories_problem(item.categories)),
                           ("labels", labels_problem(item.labels))):
        if problem is not None:
            return Problem(field, problem)
    if len(item.title) > MAX_TITLE_CHARS or not item.title.isprintable():
        return Problem("title", f"must be at most {MAX_TITLE_CHARS} printable characters")
    for field, stamp in (("available_from", item.available_from),
                         ("available_until", item.available_until),
                         ("updated_at", item.updated_at)):
        if not 0 <= stamp.nanos < 1_000_000_000:  # an absent one reads as 0
            return Problem(field, "nanos must be 0 to 999,999,999")
    if (item.HasField("available_from") and item.HasField("available_until")
            and item.available_until.ToNanoseconds() <= item.available_from.ToNanoseconds()):
        return Problem("available_until", "must be after available_from")
    return None


def user_problem(user: User) -> Problem | None:
    """The first thing wrong with `user`, or None."""
    for field, problem in (("user_id", id_problem(user.user_id)),
                           ("labels", labels_problem(user.labels))):
        if problem is not None:
            return Problem(field, problem)
    return None


def requested_by_problem(requested_by: str) -> str | None:
    if not 0 < len(requested_by) <= MAX_REQUESTED_BY_CHARS or not requested_by.isprintable():
        return f"must be 1 to {MAX_REQUESTED_BY_CHARS} printable characters (who asks)"
    return None
