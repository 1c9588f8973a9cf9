"""Top lists ranked at load against scoring each request: same answers, and scoring wherever a
list cannot hold the answer."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from services.model.artifact import ModelArtifact
from services.model.top_lists import LENGTH
from services.recommender.scoring import Query, Scorer, Strategy
from tests.support.artifacts import clustered_artifact


@pytest.fixture(scope="module")
def artifact() -> ModelArtifact:
    return clustered_artifact(n_items=1_000, n_users=300)


@pytest.fixture(scope="module")
def listed(artifact: ModelArtifact) -> Scorer:
    scorer = Scorer(artifact, top_lists_max_cells=artifact.n_users * artifact.n_items,
                    top_lists_max_users=artifact.n_users)
    assert scorer.top_lists is not None
    return scorer


@pytest.fixture(scope="module")
def scored(artifact: ModelArtifact) -> Scorer:
    return Scorer(artifact)


def _same(got: tuple[Strategy, tuple[tuple[str, float], ...]],
          expected: tuple[Strategy, tuple[tuple[str, float], ...]]) -> None:
    assert got[0] is expected[0]
    assert [item for item, _ in got[1]] == [item for item, _ in expected[1]]
    np.testing.assert_allclose([s for _, s in got[1]], [s for _, s in expected[1]], rtol=1e-5)


def test_lists_are_built_only_within_both_budgets(artifact: ModelArtifact) -> None:
    cells = artifact.n_users * artifact.n_items
    assert Scorer(artifact, top_lists_max_cells=cells - 1,
                  top_lists_max_users=artifact.n_users).top_lists is None
    assert Scorer(artifact, top_lists_max_cells=cells,
                  top_lists_max_users=artifact.n_users - 1).top_lists is None


def test_listed_answers_equal_scored_ones_with_every_exclusion(
        artifact: ModelArtifact, listed: Scorer, scored: Scorer) -> None:
    queries = [Query(f"u{n}", 10) for n in range(0, 300, 7)]
    first = scored.recommend_many(queries)
    # Exclude each user's best two (one by request, one as a recent interaction).
    queries += [Query(q.user_id, 10, exclude_item_ids=[ranked[0][0]],
                      recent_item_ids=[ranked[1][0], "not-in-catalogue"])
                for q, (_, ranked) in zip(queries, first, strict=True)]
    for got, expected in zip(listed.recommend_many(queries), scored.recommend_many(queries),
                             strict=True):
        _same(got, expected)


def test_queries_a_list_cannot_answer_are_scored(artifact: ModelArtifact, listed: Scorer,
                                                 scored: Scorer) -> None:
    (_, ranked), = scored.recommend_many([Query("u1", LENGTH)])
    everything_listed = [item for item, _ in ranked]
    queries = [
        Query("u1", 10, exclude_item_ids=everything_listed),  # the list runs out
        Query("u2", 10, exclude_seen=False),  # lists leave training items out
        Query("stranger", 5),  # popularity
        Query("newcomer", 5, recent_item_ids=["i3", "i9"]),  # fold-in
        Query("u3", 10),  # listed, in the same batch
    ]
    for got, expected in zip(listed.recommend_many(queries), scored.recommend_many(queries),
                             strict=True):
        _same(got, expected)
    assert not set(everything_listed) & {i for i, _ in listed.recommend_many(queries[:1])[0][1]}


def test_lists_shipped_in_the_artifact_are_served_without_ranking_at_load(
        artifact: ModelArtifact, listed: Scorer, scored: Scorer) -> None:
    assert listed.top_lists is not None
    shipped = dataclasses.replace(artifact, top_lists=listed.top_lists)
    scorer = Scorer(shipped)  # no budget to rank lists here: it serves the artifact's
    assert scorer.top_lists is listed.top_lists
    queries = [Query(f"u{n}", 10) for n in range(0, 300, 11)]
    for got, expected in zip(scorer.recommend_many(queries), scored.recommend_many(queries),
                             strict=True):
        _same(got, expected)
