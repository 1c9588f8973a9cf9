"""The hyper-parameter search: reproducible, warm-started, leak-free, within its budget."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest

from services.trainer import search
from services.trainer.evaluation import stratified_split
from services.trainer.hyperparameters import BOUNDS, SEARCH_SPACE, SearchRange
from services.trainer.model import Interactions, TrainConfig
from services.trainer.search import Budget, Defaults, SearchData, starting_points
from tests.support.trainer_fakes import planted

START = TrainConfig(factors=8, epochs=4, seed=3)
ENOUGH = Budget(trials=6, seconds=600.0)


@pytest.fixture(scope="module")
def train() -> Interactions:
    data = planted(n_users=120, n_items=60)
    return stratified_split(data.users, data.items, seed=42)[0]


def test_the_search_space_lies_inside_the_bounds() -> None:
    for name, scope in SEARCH_SPACE.items():
        if name != "regularization":  # drawn as a penalty, converted: see search.penalty
            assert BOUNDS[name].contains(scope.low) and BOUNDS[name].contains(scope.high)


def test_a_search_is_reproducible_from_its_seed(train: Interactions) -> None:
    first = search.search(train, starts=[START], budget=ENOUGH)
    again = search.search(train, starts=[START], budget=ENOUGH)
    assert [t.config for t in first.trials] == [t.config for t in again.trials]
    assert first.config == again.config
    other = search.search(train, starts=[dataclasses.replace(START, seed=4)], budget=ENOUGH)
    assert [t.config for t in other.trials[1:]] != [t.config for t in first.trials[1:]]


def test_the_first_starting_point_is_the_first_trial(train: Interactions) -> None:
    result = search.search(train, starts=[START], budget=ENOUGH)
    assert result.trials[0].config == START
    assert result.progress.first_validation_ndcg == result.trials[0].validation_ndcg
    assert result.progress.trials_done == len(result.trials) == ENOUGH.trials


def test_a_better_champion_is_kept(train: Interactions,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # Every other trial draws from a hopeless corner: one factor, an enormous penalty.
    monkeypatch.setattr(search, "SEARCH_SPACE", {
        "factors": SearchRange(1, 1, integer=True),
        "regularization": SearchRange(1e5, 1e6, log=True)})
    result = search.search(train, starts=[START], budget=ENOUGH)
    assert len(result.trials) > 1
    assert all((t.validation_ndcg or 0) < (result.trials[0].validation_ndcg or 0)
               for t in result.trials[1:])
    assert result.config == START


def test_no_test_row_reaches_a_trial(monkeypatch: pytest.MonkeyPatch) -> None:
    data = planted(n_users=120, n_items=60)
    train, test = stratified_split(data.users, data.items, seed=42)
    held_out = set(zip(test.users.tolist(), test.items.tolist(), strict=True))
    seen: list[set[tuple[int, int]]] = []
    real_evaluate = search.evaluate

    def evaluate(model: Any, fitted: Interactions, ranked: Interactions) -> Any:
        for part in (fitted, ranked):
            seen.append(set(zip(part.users.tolist(), part.items.tolist(), strict=True)))
        return real_evaluate(model, fitted, ranked)

    monkeypatch.setattr(search, "evaluate", evaluate)
    search.search(train, starts=[START], budget=ENOUGH)
    assert seen and all(not pairs & held_out for pairs in seen)


def test_the_trial_budget_is_respected(train: Interactions) -> None:
    result = search.search(train, starts=[START], budget=Budget(trials=3, seconds=600.0))
    assert result.progress.trials_done == 3 and result.progress.trials_budget == 3


def test_a_spent_time_budget_still_finishes_the_first_trial(train: Interactions) -> None:
    result = search.search(train, starts=[START], budget=Budget(trials=50, seconds=1e-9))
    assert [t.number for t in result.trials] == [0]
    assert not result.trials[0].pruned and result.config == START


def test_pinned_values_are_never_searched(train: Interactions) -> None:
    pinned = dataclasses.replace(START, factors=5, alpha=3.0)
    result = search.search(train, starts=[pinned], pinned={"factors", "alpha"}, budget=ENOUGH)
    assert len({t.config for t in result.trials}) > 1
    assert {(t.config.factors, t.config.alpha) for t in result.trials} == {(5, 3.0)}


def test_a_penalty_is_the_regularisation_of_a_typical_row(train: Interactions) -> None:
    config = dataclasses.replace(START, alpha=4.0, reg_exponent=0.5, regularization=0.3)
    expected = 0.3 * search.typical_row(train, 4.0) ** 0.5
    assert search.penalty(config, train) == pytest.approx(expected)
    assert search.typical_row(train, 0.0) == train.n_items


def test_starting_points_keep_pins_and_start_with_the_champion() -> None:
    champion = {"factors": 32.0, "alpha": 7.0, "regularization": 0.5, "seed": 99.0}
    starts = starting_points(START, champion=champion, pinned={"alpha"})
    assert starts[0] == dataclasses.replace(START, factors=32, regularization=0.5)
    assert starts[1] == START
    assert len(starts) == 2 + len(search.PORTFOLIO)
    assert all(s.alpha == START.alpha and s.seed == START.seed for s in starts)
    assert starting_points(START, champion={}, pinned=())[0] == START


def test_a_user_sample_bounds_what_trials_fit(train: Interactions) -> None:
    data = SearchData.carve(train, seed=1, max_rows=200, max_eval_users=25)
    assert len(data.fit) <= 200 < len(train)
    assert data.fit.n_users == data.validation.n_users < train.n_users
    assert len(np.unique(data.validation.users)) <= 25


def test_the_default_time_budget_follows_the_first_trial() -> None:
    defaults = Defaults(trials=40, trial_multiple=20.0, max_seconds=300.0, max_rows=10**6)
    budget = defaults.budget(trials=None, seconds=None)
    assert budget.trials == 40
    assert budget.seconds_after(1.5) == 30.0 and budget.seconds_after(100.0) == 300.0
    asked = defaults.budget(trials=3, seconds=7.0)
    assert (asked.trials, asked.seconds_after(100.0)) == (3, 7.0)
