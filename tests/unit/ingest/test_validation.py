from __future__ import annotations

import math
import time
from datetime import UTC, datetime

import pytest

from recsys.events.v1 import interaction_pb2
from services.core.contract import ID_RULE, id_problem
from services.ingest.validation import Limits, Problem, Validator, derive_event_id
from tests.support.ids import INVALID_IDS, VALID_IDS

NOW = datetime(2026, 6, 1, tzinfo=UTC).timestamp()
VALIDATOR = Validator(Limits())
LATEST = VALIDATOR.latest_seconds(NOW)
IDS = "must be 1 to 128 printable characters"


def event(**fields: object) -> interaction_pb2.Interaction:
    base: dict[str, object] = {
        "user_id": "u1", "item_id": "i1", "type": interaction_pb2.INTERACTION_TYPE_VIEW}
    base.update(fields)
    occurred = base.pop("occurred_s", NOW - 60)
    message = interaction_pb2.Interaction(**base)  # type: ignore[arg-type]
    if occurred is not None:
        message.occurred_at.FromSeconds(int(occurred))  # type: ignore[call-overload]
    return message


def problem(**fields: object) -> Problem | None:
    return VALIDATOR.problem(event(**fields), LATEST)


def test_a_complete_event_is_valid() -> None:
    assert problem() is None
    assert problem(type=interaction_pb2.INTERACTION_TYPE_RATING, value=4.5,
                   context={"device": "ios"}, event_id="e-1") is None


@pytest.mark.parametrize(("fields", "expected"), [
    ({"user_id": ""}, ("user_id", IDS)),
    ({"user_id": "u" * 129}, ("user_id", IDS)),
    ({"user_id": "tab\there"}, ("user_id", IDS)),
    ({"item_id": ""}, ("item_id", IDS)),
    ({"item_id": "i" * 129}, ("item_id", IDS)),
    ({"event_id": "e" * 129},
     ("event_id", "must be empty or at most 128 printable characters")),
    ({"event_id": "new\nline"},
     ("event_id", "must be empty or at most 128 printable characters")),
    ({"type": interaction_pb2.INTERACTION_TYPE_UNSPECIFIED},
     ("type", "must be a known interaction type, not UNSPECIFIED")),
    ({"type": 99}, ("type", "must be a known interaction type, not UNSPECIFIED")),
    ({"type": interaction_pb2.INTERACTION_TYPE_RATING}, ("value", "is required for a rating")),
    ({"type": interaction_pb2.INTERACTION_TYPE_RATING, "value": 5.5},
     ("value", "must be 0.5 to 5 for a rating")),
    ({"type": interaction_pb2.INTERACTION_TYPE_RATING, "value": 0.0},
     ("value", "must be 0.5 to 5 for a rating")),
    ({"type": interaction_pb2.INTERACTION_TYPE_RATING, "value": math.nan},
     ("value", "must be 0.5 to 5 for a rating")),
    ({"value": -1.0}, ("value", "must be 0 to 1e+06")),
    ({"value": 2e6}, ("value", "must be 0 to 1e+06")),
    ({"value": math.inf}, ("value", "must be 0 to 1e+06")),
    ({"occurred_s": None}, ("occurred_at", "is required")),
    ({"occurred_s": datetime(1994, 12, 31, tzinfo=UTC).timestamp()},
     ("occurred_at", "must not be before 1995-01-01T00:00:00+00:00")),
    ({"occurred_s": NOW + 301}, ("occurred_at", "must not be more than 300 s in the future")),
    ({"context": {f"k{i}": "v" for i in range(17)}},
     ("context", "must have at most 16 entries")),
    ({"context": {"": "v"}}, ("context", "keys must be 1 to 64 characters")),
    ({"context": {"k" * 65: "v"}}, ("context", "keys must be 1 to 64 characters")),
    ({"context": {"k": "v" * 257}}, ("context", "values must be at most 256 characters")),
])
def test_each_rule_names_its_field_and_reason(
    fields: dict[str, object], expected: tuple[str, str]
) -> None:
    assert problem(**fields) == expected


def test_limits_at_their_bounds_are_accepted() -> None:
    assert problem(user_id="u" * 128, item_id="ü" * 128, event_id="e" * 128) is None
    assert problem(type=interaction_pb2.INTERACTION_TYPE_RATING, value=0.5) is None
    assert problem(value=1e6) is None
    assert problem(occurred_s=NOW + 300) is None
    assert problem(occurred_s=datetime(1995, 1, 1, tzinfo=UTC).timestamp()) is None
    assert problem(context={f"k{i}": "v" * 256 for i in range(16)}) is None


@pytest.mark.parametrize("value", VALID_IDS + [value for value, _ in INVALID_IDS])
def test_ids_follow_the_contracts_rule(value: str) -> None:
    """The validator spells the id rule inline (it runs per event); it agrees with core's."""
    expected = None if id_problem(value) is None else ID_RULE
    for field in ("user_id", "item_id"):
        found = problem(**{field: value})
        assert (found.reason if found else None) == expected, field


def test_invalid_nanos_are_rejected() -> None:
    bad = event()
    bad.occurred_at.nanos = -1
    assert VALIDATOR.problem(bad, LATEST) == ("occurred_at", "nanos must be 0 to 999,999,999")


def test_limits_are_configurable() -> None:
    strict = Validator(Limits(rating_min=1, rating_max=10, max_weight=5, max_future_s=0,
                              min_occurred_at=datetime(2020, 1, 1, tzinfo=UTC)))
    latest = strict.latest_seconds(NOW)
    rating = interaction_pb2.INTERACTION_TYPE_RATING
    assert strict.problem(event(type=rating, value=8.0), latest) is None
    assert strict.problem(event(value=6.0), latest) == ("value", "must be 0 to 5")
    assert strict.problem(event(occurred_s=NOW + 1), latest) == (
        "occurred_at", "must not be more than 0 s in the future")
    assert strict.problem(event(occurred_s=NOW - 10 * 365 * 86400), latest) == (
        "occurred_at", "must not be before 2020-01-01T00:00:00+00:00")


def test_derived_ids_depend_on_content_only() -> None:
    one = event(value=2.0, context={"a": "1", "b": "2"})
    same = event(value=2.0, context={"b": "2", "a": "1"})
    same.ingested_at.FromSeconds(int(time.time()))  # set by the service: not content
    assert derive_event_id(one) == derive_event_id(same)
    assert len(derive_event_id(one)) == 32
    variants = [
        event(value=2.0, context={"a": "1", "b": "3"}),
        event(value=2.0, context={"a": "1"}),
        event(value=0.0, context={"a": "1", "b": "2"}),
        event(context={"a": "1", "b": "2"}),  # no value differs from 0
        event(value=2.0, context={"a": "1", "b": "2"}, user_id="u2"),
        event(value=2.0, context={"a": "1", "b": "2"}, occurred_s=NOW - 61),
        event(value=2.0, context={"a": "1", "b": "2"}, type=interaction_pb2.INTERACTION_TYPE_LIKE),
    ]
    ids = {derive_event_id(v) for v in variants}
    assert len(ids) == len(variants)
    assert derive_event_id(one) not in ids


def test_derived_ids_do_not_confuse_field_boundaries() -> None:
    assert derive_event_id(event(user_id="ab", item_id="c")) != derive_event_id(
        event(user_id="a", item_id="bc"))
