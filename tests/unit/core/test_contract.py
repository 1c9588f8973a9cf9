"""The id rule every service checks: what `id_problem` says about each kind of bad id."""

from __future__ import annotations

import pytest

from services.core.contract import categories_problem, id_problem, labels_problem
from tests.support.ids import INVALID_IDS, VALID_IDS


@pytest.mark.parametrize("value", VALID_IDS)
def test_an_id_that_follows_the_rule_has_no_problem(value: str) -> None:
    assert id_problem(value) is None


@pytest.mark.parametrize(("value", "problem"), INVALID_IDS)
def test_each_broken_rule_is_named(value: str, problem: str) -> None:
    assert id_problem(value) == problem


@pytest.mark.parametrize(("values", "problem"), [
    ([], None),
    (["books", "a" * 64], None),
    (["b"] * 17, "at most 16 entries, got 17"),
    (["books", ""], "entry 1 must be 1 to 64 printable characters"),
    (["a" * 65], "entry 0 must be 1 to 64 printable characters"),
    (["tab\there"], "entry 0 must be 1 to 64 printable characters"),
])
def test_categories_are_bounded_in_number_and_length(values: list[str],
                                                     problem: str | None) -> None:
    assert categories_problem(values) == problem


def test_labels_have_bounds_of_their_own() -> None:
    assert labels_problem(["x" * 128] * 64) is None
    assert labels_problem(["x"] * 65) == "at most 64 entries, got 65"
    assert labels_problem(["x" * 129]) == "entry 0 must be 1 to 128 printable characters"
