"""Scoring against numpy: exclusions, strategies, k, category filters, cosine similarity."""

from __future__ import annotations

import numpy as np
import pytest

from services.core.errors import NotFound
from services.model.artifact import ModelArtifact
from services.recommender.scoring import DIRECT_MAX_CELLS, ItemFilter, Query, Scorer, Strategy
from tests.support.artifacts import small_artifact


@pytest.fixture(scope="module")
def artifact() -> ModelArtifact:
    return small_artifact()


@pytest.fixture(scope="module")
def scorer(artifact: ModelArtifact) -> Scorer:
    return Scorer(artifact)


def _ids(ranked: tuple[tuple[str, float], ...]) -> list[str]:
    return [item for item, _ in ranked]


def _training_items(artifact: ModelArtifact, user: int) -> set[str]:
    return {str(artifact.item_ids[i]) for i in artifact.seen(user)}


def test_personalized_ranks_by_dot_product_without_training_items(
        artifact: ModelArtifact, scorer: Scorer) -> None:
    strategy, ranked = scorer.recommend("u3", k=10, exclude_seen=True)
    assert strategy is Strategy.PERSONALIZED
    scores = artifact.item_factors @ artifact.user_factors[3]
    scores[artifact.seen(3)] = -np.inf
    expected = [str(artifact.item_ids[i]) for i in np.argsort(-scores, kind="stable")[:10]]
    assert _ids(ranked) == expected
    assert not set(_ids(ranked)) & _training_items(artifact, 3)
    assert [s for _, s in ranked] == sorted((s for _, s in ranked), reverse=True)
    np.testing.assert_allclose([s for _, s in ranked], np.sort(scores)[::-1][:10], rtol=1e-5)


def test_exclude_seen_false_keeps_training_items(artifact: ModelArtifact, scorer: Scorer) -> None:
    _, ranked = scorer.recommend("u3", k=artifact.n_items, exclude_seen=False)
    assert len(ranked) == artifact.n_items
    assert _training_items(artifact, 3) <= set(_ids(ranked))


def test_exclude_list_and_recent_items_are_left_out(artifact: ModelArtifact,
                                                    scorer: Scorer) -> None:
    _, top = scorer.recommend("u3", k=5, exclude_seen=True)
    first, second = _ids(top)[:2]
    _, ranked = scorer.recommend("u3", k=5, exclude_seen=True, exclude_item_ids=[first],
                                 recent_item_ids=[second, "not-in-catalogue"])
    assert first not in _ids(ranked)
    assert second not in _ids(ranked)
    _, kept = scorer.recommend("u3", k=artifact.n_items, exclude_seen=False,
                               recent_item_ids=[second])
    assert second in _ids(kept)


def test_unknown_user_with_recent_items_is_folded_in(artifact: ModelArtifact,
                                                     scorer: Scorer) -> None:
    recent = ["i4", "i8", "i12", "i4"]
    strategy, ranked = scorer.recommend("new-user", k=5, exclude_seen=True,
                                        recent_item_ids=recent)
    assert strategy is Strategy.FOLD_IN
    vector = artifact.fold_in(np.array([4, 8, 12, 4]))
    scores = artifact.item_factors @ vector
    scores[[4, 8, 12]] = -np.inf
    assert _ids(ranked) == [str(artifact.item_ids[i]) for i in np.argsort(-scores)[:5]]


def test_unknown_user_without_history_gets_popular_items(artifact: ModelArtifact,
                                                         scorer: Scorer) -> None:
    strategy, ranked = scorer.recommend("stranger", k=5, exclude_seen=True,
                                        recent_item_ids=["not-in-catalogue"])
    assert strategy is Strategy.POPULARITY
    assert [s for _, s in ranked] == sorted(artifact.item_popularity.tolist(), reverse=True)[:5]
    most_popular = _ids(ranked)[0]
    _, without = scorer.recommend("stranger", k=5, exclude_seen=True,
                                  exclude_item_ids=[most_popular])
    assert most_popular not in _ids(without)


def test_k_beyond_what_is_left_returns_only_real_items(artifact: ModelArtifact,
                                                       scorer: Scorer) -> None:
    everything_else = [str(i) for i in artifact.item_ids[1:]]
    _, ranked = scorer.recommend("u1", k=50, exclude_seen=False,
                                 exclude_item_ids=everything_else)
    assert _ids(ranked) == [str(artifact.item_ids[0])]


def test_similar_items_by_cosine(artifact: ModelArtifact, scorer: Scorer) -> None:
    ranked = scorer.similar("i7", k=5)
    unit = artifact.item_factors / np.linalg.norm(artifact.item_factors, axis=1, keepdims=True)
    cosine = unit @ unit[7]
    cosine[7] = -np.inf
    assert _ids(ranked) == [str(artifact.item_ids[i]) for i in np.argsort(-cosine)[:5]]
    np.testing.assert_allclose([s for _, s in ranked], np.sort(cosine)[::-1][:5], rtol=1e-4)
    assert "i7" not in _ids(ranked)


def test_similar_to_an_unknown_item_is_not_found(scorer: Scorer) -> None:
    with pytest.raises(NotFound, match="'nope'"):
        scorer.similar("nope", k=5)


def test_a_batch_ranks_each_query_as_if_alone(scorer: Scorer) -> None:
    queries = [
        Query("u3", 5),
        Query("new-user", 4, recent_item_ids=["i4", "i8"]),  # folded in
        Query("stranger", 3),  # popularity
        Query("u3", 7, exclude_seen=False, exclude_item_ids=["i1", "i2"]),
        Query("u5", 50, recent_item_ids=["i9"]),
    ]
    alone = [scorer.recommend(q.user_id, k=q.k, exclude_seen=q.exclude_seen,
                              exclude_item_ids=q.exclude_item_ids,
                              recent_item_ids=q.recent_item_ids) for q in queries]
    batched = scorer.recommend_many(queries)
    assert [strategy for strategy, _ in batched] == [strategy for strategy, _ in alone]
    for (strategy, together), (_, single) in zip(batched, alone, strict=True):
        if strategy is not Strategy.POPULARITY:  # popularity counts tie, in either order
            assert _ids(together) == _ids(single)
        np.testing.assert_allclose([s for _, s in together], [s for _, s in single],
                                   rtol=1e-5)


def _category(rows: list[int]) -> ItemFilter:
    return ItemFilter(frozenset(), np.empty(0, np.int64), only=np.asarray(rows, np.int64))


def test_a_category_filter_ranks_only_its_items_directly_and_in_batches(
        artifact: ModelArtifact, scorer: Scorer) -> None:
    only = list(range(0, artifact.n_items, 3))
    _, top = scorer.recommend("u3", k=1, exclude_seen=True)
    query = Query("u3", 5, exclude_item_ids=_ids(top), recent_item_ids=["i3"],
                  items=_category(only))
    scores = np.full(artifact.n_items, -np.inf)
    scores[only] = artifact.item_factors[only] @ artifact.user_factors[3]
    scores[[*artifact.seen(3), artifact.item_ids.tolist().index(_ids(top)[0]), 3]] = -np.inf
    expected = [str(artifact.item_ids[i]) for i in np.argsort(-scores, kind="stable")[:5]]
    direct = scorer.direct(query)
    assert direct is not None
    (strategy, batched), = scorer.recommend_many([query])
    assert (direct[0], strategy) == (Strategy.PERSONALIZED, Strategy.PERSONALIZED)
    assert _ids(direct[1]) == _ids(batched) == expected
    np.testing.assert_allclose([s for _, s in direct[1]], np.sort(scores)[::-1][:5], rtol=1e-5)


def test_only_a_known_users_top_list_or_small_category_is_computed_directly(
        artifact: ModelArtifact, scorer: Scorer) -> None:
    few = _category([0, 1, 2])
    assert scorer.direct(Query("u3", 2)) == scorer.listed(Query("u3", 2))
    assert scorer.direct(Query("u3", 2, items=few)) is not None
    assert scorer.direct(Query("u3", 2, items=few, anonymous=True)) is None  # erased user
    assert scorer.direct(Query("stranger", 2, items=few)) is None
    factors = artifact.user_factors.shape[1]
    many = _category(list(range(DIRECT_MAX_CELLS // factors + 1)))
    assert scorer.direct(Query("u3", 2, items=many)) is None
