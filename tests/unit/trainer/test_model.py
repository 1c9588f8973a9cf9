"""iALS training: configuration checks, convergence, determinism, cancellation and quality."""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any

import numpy as np
import pytest
import torch

from services.data.synthetic import SyntheticData, SyntheticSpec
from services.trainer.evaluation import evaluate, stratified_split
from services.trainer.model import Interactions, TrainConfig, TrainingCancelled, fit
from services.trainer.settings import TrainerSettings
from tests.support.trainer_fakes import planted

SMALL = TrainConfig(factors=16, epochs=6)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("factors", 0),
        ("epochs", 0),
        ("regularization", 0.0),
        ("regularization", math.nan),
        ("reg_exponent", -1.0),
        ("alpha", -0.5),
        ("alpha", math.inf),
        ("init_std", 0.0),
        ("seed", -1),
        ("num_threads", 0),
    ],
)
def test_validate_names_the_bad_field(field: str, value: float) -> None:
    change: dict[str, Any] = {field: value}
    config = dataclasses.replace(TrainConfig(), **change)
    with pytest.raises(ValueError, match=f"^{field}:"):
        config.validate()
    with pytest.raises(ValueError, match=f"^{field}:"):
        fit(planted(n_users=10), config)


def test_interactions_merge_repeats_and_reject_bad_input() -> None:
    data = Interactions.from_arrays(
        np.array([1, 0, 1, 1]), np.array([2, 1, 2, 0]), np.array([1.0, 2.0, 0.5, 1.0])
    )
    assert (data.n_users, data.n_items) == (2, 3)
    assert data.users.tolist() == [0, 1, 1] and data.items.tolist() == [1, 0, 2]
    assert data.weights.tolist() == [2.0, 1.0, 1.5]
    assert data.indptr().tolist() == [0, 1, 3]
    with pytest.raises(ValueError, match="weights"):
        Interactions.from_arrays(np.array([0]), np.array([0]), np.array([0.0]))
    with pytest.raises(ValueError, match="out of range"):
        Interactions.from_arrays(np.array([0]), np.array([5]), n_items=5)


def test_beats_popularity_on_planted_structure() -> None:
    data = planted()
    train, test = stratified_split(data.users, data.items)
    counts = torch.from_numpy(np.bincount(train.items, minlength=train.n_items)).float()
    popularity = evaluate(lambda users: counts.expand(len(users), -1), train, test)
    model = evaluate(fit(train, SMALL), train, test)
    assert model.ndcg > popularity.ndcg + 0.15
    assert model.precision > popularity.precision + 0.1


def test_reports_each_epoch_with_a_non_increasing_loss() -> None:
    calls: list[tuple[int, int, float]] = []
    data = planted()
    fit(data, SMALL,
        on_epoch=lambda epoch, epochs, model: calls.append((epoch, epochs, model.loss(data))))
    assert [(e, n) for e, n, _ in calls] == [(e, 6) for e in range(1, 7)]
    losses = [loss for _, _, loss in calls]
    assert all(math.isfinite(loss) and loss > 0 for loss in losses)
    # Every half-epoch is an exact block minimisation, so the objective never goes up.
    assert all(b <= a * (1 + 1e-5) for a, b in itertools.pairwise(losses))
    assert losses[-1] < losses[0]


def test_cancel_raises_and_stops_training() -> None:
    polls: list[None] = []
    epochs: list[int] = []

    def cancel() -> bool:
        polls.append(None)
        return len(polls) > 2  # two polls per epoch: cancel as epoch 2 starts

    with pytest.raises(TrainingCancelled):
        fit(planted(), SMALL, on_epoch=lambda e, _n, _l: epochs.append(e), should_cancel=cancel)
    assert epochs == [1]


def test_deterministic_for_a_seed_whatever_the_thread_count() -> None:
    data = planted()
    first = fit(data, dataclasses.replace(SMALL, num_threads=1))
    again = fit(data, dataclasses.replace(SMALL, num_threads=3))
    other = fit(data, dataclasses.replace(SMALL, seed=1))
    assert torch.equal(first.user_factors, again.user_factors)
    assert torch.equal(first.item_factors, again.item_factors)
    assert not torch.equal(first.user_factors, other.user_factors)


def test_score_is_the_factor_dot_product() -> None:
    model = fit(planted(n_users=20), SMALL)
    users = np.array([3, 0, 7])
    expected = model.user_factors[users] @ model.item_factors.T
    assert torch.allclose(model.score(users), expected)
    assert model.score(users).shape == (3, 150)


def test_users_and_items_without_interactions_get_zero_factors() -> None:
    data = Interactions.from_arrays(np.array([0, 0, 2]), np.array([0, 1, 1]), n_items=4)
    model = fit(data, SMALL)
    assert torch.all(model.user_factors[1] == 0)
    assert torch.all(model.item_factors[2:] == 0)


def test_default_hyper_parameters_pass_the_quality_gate_floor_on_synthetic_data() -> None:
    """The trainer's defaults, on data the project generates, with the offline protocol (its
    MovieLens-100k figures are scripts/bench/train.py's: no test needs data from outside)."""
    events = list(SyntheticData(SyntheticSpec(users=400, items=300, events=12_000,
                                              seed=11)).events())
    users = np.unique([e.user_id for e in events], return_inverse=True)[1]
    items = np.unique([e.item_id for e in events], return_inverse=True)[1]
    train, test = stratified_split(users, items)
    result = evaluate(fit(train), train, test)
    assert result.users_evaluated == len(np.unique(test.users)) > 0
    assert result.ndcg >= TrainerSettings().min_ndcg
    assert result.precision > 0
