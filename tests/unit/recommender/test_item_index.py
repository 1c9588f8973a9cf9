"""The IVF item index against exact scoring: calibration, exclusions, padding, and the Scorer
that falls back to exact scoring where the index cannot serve a query."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from services.model.artifact import ModelArtifact
from services.recommender import item_index
from services.recommender.item_index import BLOCK, MAX_SCANNED, ItemIndex
from services.recommender.scoring import Query, Scorer, Strategy
from tests.support.artifacts import clustered_artifact

N_ITEMS = 5_003  # not a multiple of BLOCK: some blocks are padded


@pytest.fixture(scope="module")
def artifact() -> ModelArtifact:
    return clustered_artifact(n_items=N_ITEMS)


@pytest.fixture(scope="module")
def items(artifact: ModelArtifact) -> torch.Tensor:
    return torch.from_numpy(artifact.item_factors)


@pytest.fixture(scope="module")
def queries(artifact: ModelArtifact) -> torch.Tensor:
    return torch.from_numpy(artifact.user_factors)


@pytest.fixture(scope="module")
def index(items: torch.Tensor, queries: torch.Tensor) -> ItemIndex:
    exact = torch.topk(queries[:200] @ items.T, 10).indices.numpy()
    built = ItemIndex.build(items, queries[:200], exact, target_recall=0.9)
    assert built is not None
    return built


def _recall(found: torch.Tensor, exact: torch.Tensor) -> float:
    return sum(len(set(f) & set(e)) for f, e in zip(found.tolist(), exact.tolist(),
                                                     strict=True)) / exact.numel()


def test_calibration_reaches_the_target_on_other_queries_while_scanning_little(
        index: ItemIndex, items: torch.Tensor, queries: torch.Tensor) -> None:
    assert index.recall >= 0.9
    assert index.scanned <= MAX_SCANNED
    assert index.probes < index.n_blocks
    held_out = queries[200:]
    _, found = index.search(held_out, 10)
    assert _recall(found, torch.topk(held_out @ items.T, 10).indices) >= 0.85


def test_fewer_probes_than_calibrated_miss_the_target(
        index: ItemIndex, items: torch.Tensor, queries: torch.Tensor) -> None:
    """The calibrated probe count is the fewest that reach it."""
    assert index.probes > -(-10 // BLOCK), "this catalogue needs more than the fewest probes"
    fewer = dataclasses.replace(index, probes=index.probes - 1)
    _, found = fewer.search(queries[:200], 10)
    assert _recall(found, torch.topk(queries[:200] @ items.T, 10).indices) < 0.9


def test_probing_every_block_is_exact_and_never_returns_padding_or_banned_items(
        index: ItemIndex, items: torch.Tensor, queries: torch.Tensor) -> None:
    everything = dataclasses.replace(index, probes=index.n_blocks)
    some = queries[:8]
    exact = some @ items.T
    banned = torch.topk(exact, 3).indices + torch.arange(8).unsqueeze(1) * N_ITEMS
    exact.view(-1)[banned.view(-1)] = float("-inf")
    values, rows = everything.search(some, 20, banned=banned.view(-1))
    expected_values, expected_rows = torch.topk(exact, 20)
    np.testing.assert_array_equal(rows, expected_rows.numpy())
    np.testing.assert_allclose(values, expected_values.numpy(), rtol=1e-5)
    assert (rows < N_ITEMS).all()


def test_rows_map_back_to_the_catalogue(index: ItemIndex, items: torch.Tensor,
                                        queries: torch.Tensor) -> None:
    values, rows = index.search(queries[:5], 10)
    expected = (queries[:5].unsqueeze(1) * items[torch.from_numpy(rows)]).sum(dim=2)
    np.testing.assert_allclose(values, expected.numpy(), rtol=1e-5)


def test_factors_without_structure_get_no_index() -> None:
    rng = np.random.default_rng(0)
    items = torch.from_numpy(rng.normal(size=(5_000, 64)).astype(np.float32))
    queries = torch.from_numpy(rng.normal(size=(100, 64)).astype(np.float32))
    exact = torch.topk(queries @ items.T, 10).indices.numpy()
    assert ItemIndex.build(items, queries, exact, target_recall=0.95) is None


def test_scorer_uses_the_index_only_from_the_configured_size(artifact: ModelArtifact) -> None:
    assert Scorer(artifact).index is None
    assert Scorer(artifact, index_min_items=N_ITEMS + 1).index is None
    indexed = Scorer(artifact, index_min_items=N_ITEMS, target_recall=0.9).index
    assert indexed is not None and indexed.recall >= 0.9


def test_scorer_with_index_excludes_and_falls_back_like_exact_scoring(
        artifact: ModelArtifact) -> None:
    exact = Scorer(artifact)
    indexed = Scorer(artifact, index_min_items=1, target_recall=0.9)
    assert indexed.index is not None
    queries = [Query(f"u{n}", 10) for n in range(300, 400)]
    approximate = indexed.recommend_many(queries)
    found = sum(len({i for i, _ in a} & {i for i, _ in e})
                for (_, a), (_, e) in zip(approximate, exact.recommend_many(queries),
                                          strict=True))
    assert found / (10 * len(queries)) >= 0.85
    for query, (strategy, ranked) in zip(queries, approximate, strict=True):
        assert strategy is Strategy.PERSONALIZED and len(ranked) == 10
        row = int(query.user_id[1:])
        assert not {i for i, _ in ranked} & {f"i{i}" for i in artifact.seen(row)}
    # Popularity is ranked exactly, in the same batch as indexed queries.
    batch = indexed.recommend_many([Query("stranger", 5), Query("u1", 5)])
    assert batch[0] == exact.recommend_many([Query("stranger", 5)])[0]


def test_a_query_whose_probed_blocks_are_all_excluded_is_scored_exactly(
        artifact: ModelArtifact) -> None:
    indexed = Scorer(artifact, index_min_items=1, target_recall=0.9)
    index = indexed.index
    assert index is not None
    vector = torch.from_numpy(artifact.user_factors[3:4])
    scores = vector.numpy() @ index.centroids_t
    probed = torch.topk(torch.from_numpy(scores), index.probes).indices.numpy()
    candidates = sorted({f"i{r}" for r in index.block_items[probed].ravel().tolist()})
    query = Query("u3", 10, exclude_seen=False, exclude_item_ids=candidates)
    ((_, ranked),) = indexed.recommend_many([query])
    assert ranked == Scorer(artifact).recommend_many([query])[0][1]
    assert len(ranked) == 10 and not {i for i, _ in ranked} & set(candidates)


def test_a_search_split_into_groups_of_queries_finds_the_same(
        index: ItemIndex, queries: torch.Tensor, monkeypatch: pytest.MonkeyPatch) -> None:
    banned = torch.tensor([5, N_ITEMS + 7, 3 * N_ITEMS + 11])
    whole = index.search(queries[:6], 10, banned=banned)
    monkeypatch.setattr(item_index, "_GATHER_FLOATS", 1)  # one query per group
    split = index.search(queries[:6], 10, banned=banned)
    np.testing.assert_array_equal(whole[1], split[1])
    np.testing.assert_array_equal(whole[0], split[0])
