"""The id rule every service checks: what `id_problem` says about each kind of bad id."""

from __future__ import annotations

import pytest

from services.core.contract import ID_RULE, MAX_ID_CHARS, id_problem

# Ids that follow the rule, and ids that break it (with what id_problem says), shared with
# the ingest test that checks its inline copy of the rule agrees.
VALID_IDS = ["u1", "u" * MAX_ID_CHARS, "ü" * MAX_ID_CHARS, "a b", "user@example.com", "日本"]
INVALID_IDS = [
    ("", "is required"),
    ("u" * (MAX_ID_CHARS + 1), f"at most {MAX_ID_CHARS} characters, got {MAX_ID_CHARS + 1}"),
    ("tab\there", ID_RULE),
    ("new\nline", ID_RULE),
    ("nul\x00", ID_RULE),
    ("no\u00a0break", ID_RULE),  # a separator other than the space
    ("\u200bzero-width", ID_RULE),  # a format character
]


@pytest.mark.parametrize("value", VALID_IDS)
def test_an_id_that_follows_the_rule_has_no_problem(value: str) -> None:
    assert id_problem(value) is None


@pytest.mark.parametrize(("value", "problem"), INVALID_IDS)
def test_each_broken_rule_is_named(value: str, problem: str) -> None:
    assert id_problem(value) == problem
