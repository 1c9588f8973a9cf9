"""The id rule every service checks: what `id_problem` says about each kind of bad id."""

from __future__ import annotations

import pytest

from services.core.contract import id_problem
from tests.support.ids import INVALID_IDS, VALID_IDS


@pytest.mark.parametrize("value", VALID_IDS)
def test_an_id_that_follows_the_rule_has_no_problem(value: str) -> None:
    assert id_problem(value) is None


@pytest.mark.parametrize(("value", "problem"), INVALID_IDS)
def test_each_broken_rule_is_named(value: str, problem: str) -> None:
    assert id_problem(value) == problem
