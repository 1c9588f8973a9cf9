"""The offline protocol: split rules and metric values on cases worked out by hand."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch

from services.trainer.evaluation import (
    RankingMetrics,
    evaluate,
    evaluation_sample,
    stratified_split,
)
from services.trainer.model import Interactions


def _pairs(pairs: list[tuple[int, int]], *, n_users: int, n_items: int) -> Interactions:
    users, items = zip(*pairs, strict=True) if pairs else ((), ())
    return Interactions.from_arrays(
        np.array(users, np.int64), np.array(items, np.int64), n_users=n_users, n_items=n_items
    )


def _fixed_scores(matrix: list[list[float]]):
    table = torch.tensor(matrix)
    return lambda users: table[torch.as_tensor(users)]


def test_metrics_match_a_hand_computed_case() -> None:
    # User 0: item 0 is a train item with the top score (must be skipped); the top 3 of the
    # rest are items 2, 3, 4 with hits at ranks 1 and 3 out of 2 test items.
    # User 1: test items 0 and 3 are ranked below the top 3 (no hits).
    # User 2: no test items, so not evaluated.
    train = _pairs([(0, 0), (1, 1), (2, 2)], n_users=3, n_items=6)
    test = _pairs([(0, 2), (0, 4), (1, 0), (1, 3)], n_users=3, n_items=6)
    scores = _fixed_scores(
        [
            [9.0, 1.0, 5.0, 4.0, 3.0, 0.0],
            [0.2, 9.0, 5.0, 0.5, 4.0, 3.0],
            [1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
        ]
    )
    result = evaluate(scores, train, test, k=3)

    dcg = 1 + 1 / math.log2(4)
    ideal = 1 + 1 / math.log2(3)
    assert result.users_evaluated == 2
    assert result.precision == pytest.approx((2 / 3 + 0) / 2)
    assert result.recall == pytest.approx((2 / 2 + 0) / 2)
    assert result.ndcg == pytest.approx((dcg / ideal + 0) / 2)
    assert result.map == pytest.approx(((1 / 1 + 2 / 3) / 2 + 0) / 2)


def test_recall_divides_by_all_test_items_and_precision_by_k() -> None:
    # User 0 has 20 test items ranked first: 10 hits -> recall 0.5, everything else 1.
    # User 1 has 2 test items ranked first: precision 2/10, recall/NDCG/MAP 1.
    n_items = 40
    train = _pairs([(0, 39), (1, 39)], n_users=2, n_items=n_items)
    test = _pairs([(0, i) for i in range(20)] + [(1, 0), (1, 1)], n_users=2, n_items=n_items)
    descending = [float(n_items - i) for i in range(n_items)]
    result = evaluate(_fixed_scores([descending, descending]), train, test)

    assert result.precision == pytest.approx((1.0 + 0.2) / 2)
    assert result.recall == pytest.approx((0.5 + 1.0) / 2)
    assert result.ndcg == pytest.approx(1.0)
    assert result.map == pytest.approx(1.0)


def test_map_normalises_by_the_smaller_of_k_and_test_size() -> None:
    # One hit at rank 2 among 3 test items: AP@10 = (1/2) / 3.
    n_items = 30
    train = _pairs([(0, 29)], n_users=1, n_items=n_items)
    test = _pairs([(0, 1), (0, 20), (0, 21)], n_users=1, n_items=n_items)
    scores = _fixed_scores([[float(n_items - i) for i in range(n_items)]])
    result = evaluate(scores, train, test)

    assert result.map == pytest.approx(0.5 / 3)
    assert result.ndcg == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3) + 0.5))


def test_scorer_object_numpy_function_and_batching_agree() -> None:
    rng = np.random.default_rng(0)
    table = rng.random((50, 30)).astype(np.float32)
    users, items = rng.integers(0, 50, 600), rng.integers(0, 30, 600)
    train, test = stratified_split(users, items, n_users=50, n_items=30)

    class Model:
        def score(self, batch: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(table[batch])

    expected = evaluate(Model(), train, test)
    assert evaluate(lambda batch: table[batch], train, test) == expected
    batched = evaluate(Model(), train, test, batch_users=7)
    assert batched.as_dict() == pytest.approx(expected.as_dict())
    assert batched.users_evaluated == expected.users_evaluated == len(np.unique(test.users))


def test_as_dict_uses_the_metric_names_logged_to_mlflow() -> None:
    metrics = RankingMetrics(precision=0.1, recall=0.2, ndcg=0.3, map=0.4, users_evaluated=5)
    assert metrics.as_dict() == {
        "precision_at_10": 0.1,
        "recall_at_10": 0.2,
        "ndcg_at_10": 0.3,
        "map_at_10": 0.4,
    }


def test_split_sizes_follow_round_three_quarters_with_one_train_item() -> None:
    sizes = {0: 1, 1: 2, 2: 4, 3: 5, 4: 6, 5: 40}
    users = np.concatenate([np.full(n, u) for u, n in sizes.items()])
    items = np.concatenate([np.arange(n) for n in sizes.values()])
    train, test = stratified_split(users, items)

    train_counts = np.bincount(train.users, minlength=len(sizes))
    test_counts = np.bincount(test.users, minlength=len(sizes))
    # round() is Python's: 0.75 * 2 = 1.5 -> 2 and 0.75 * 6 = 4.5 -> 4.
    assert train_counts.tolist() == [1, 2, 3, 4, 4, 30]
    assert (train_counts + test_counts).tolist() == list(sizes.values())


def test_split_is_disjoint_complete_and_merges_repeated_pairs() -> None:
    rng = np.random.default_rng(1)
    users, items = rng.integers(0, 40, 2000), rng.integers(0, 60, 2000)
    weights = rng.random(2000) + 0.5
    train, test = stratified_split(users, items, weights)

    split_keys = np.concatenate([train.users * 60 + train.items, test.users * 60 + test.items])
    assert len(np.unique(split_keys)) == len(split_keys)
    assert set(split_keys.tolist()) == set((users * 60 + items).tolist())
    total = float(train.weights.sum() + test.weights.sum())
    assert total == pytest.approx(weights.sum(), rel=1e-5)


def test_split_is_deterministic_per_seed() -> None:
    rng = np.random.default_rng(2)
    users, items = rng.integers(0, 30, 900), rng.integers(0, 80, 900)
    first, _ = stratified_split(users, items)
    again, _ = stratified_split(users, items)
    other, _ = stratified_split(users, items, seed=7)

    assert np.array_equal(first.items, again.items) and np.array_equal(first.users, again.users)
    assert not np.array_equal(first.items, other.items)


def test_split_rejects_a_bad_ratio() -> None:
    with pytest.raises(ValueError, match="ratio"):
        stratified_split(np.array([0]), np.array([0]), ratio=1.5)


def _random_interactions(n_users: int = 200, n_items: int = 50, seed: int = 3) -> Interactions:
    rng = np.random.default_rng(seed)
    users = rng.integers(0, n_users, 3000)
    return Interactions.from_arrays(users, rng.integers(0, n_items, 3000),
                                    n_users=n_users, n_items=n_items)


def test_up_to_its_size_the_evaluation_covers_every_user_exactly() -> None:
    data = _random_interactions()
    assert evaluation_sample(data, max_rows=len(data), max_users=data.n_users) is data


def test_beyond_its_size_the_evaluation_takes_whole_users_seeded() -> None:
    data = _random_interactions()
    sample = evaluation_sample(data, max_rows=len(data) // 4, max_users=data.n_users)
    assert 0 < len(sample) <= len(data) // 4 and sample.n_items == data.n_items
    assert sample.n_users == len(np.unique(sample.users)) < data.n_users
    # Each kept user keeps every one of its rows (users are renumbered: compare item lists).
    assert Counter(_rows(sample)) <= Counter(_rows(data))
    again = evaluation_sample(data, max_rows=len(data) // 4, max_users=data.n_users)
    assert np.array_equal(again.users, sample.users) and np.array_equal(again.items, sample.items)


def test_beyond_its_users_the_evaluation_takes_that_many_whole_users() -> None:
    data = _random_interactions()
    sample = evaluation_sample(data, max_rows=len(data), max_users=50)
    assert sample.n_users == len(np.unique(sample.users)) == 50
    assert Counter(_rows(sample)) <= Counter(_rows(data))
    # Within both bounds the rows' sample is unchanged by a users' bound it does not reach.
    by_rows = evaluation_sample(data, max_rows=len(data) // 4, max_users=data.n_users)
    both = evaluation_sample(data, max_rows=len(data) // 4, max_users=by_rows.n_users)
    assert np.array_equal(both.users, by_rows.users) and np.array_equal(both.items, by_rows.items)


def _rows(data: Interactions) -> list[tuple[int, ...]]:
    """Each user's items."""
    indptr = data.indptr()
    return [tuple(data.items[indptr[u]:indptr[u + 1]].tolist()) for u in range(data.n_users)]
