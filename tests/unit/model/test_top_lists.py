"""TopLists.rank against a brute-force ranking of every user, seen items left out."""

from __future__ import annotations

import numpy as np
import pytest

from services.model import top_lists
from services.model.top_lists import LENGTH, TopLists


def _random_model(n_users: int, n_items: int, rng: np.random.Generator
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Factors and a seen-items CSR; user 1 has seen all but 3 items, user 2 none."""
    users = rng.standard_normal((n_users, 8)).astype(np.float32)
    users[3] = 0  # every item ties
    # Norms as skewed as a trained model's (popular items' factors are longer).
    items = (rng.standard_normal((n_items, 8)) * rng.lognormal(0, 1, (n_items, 1))
             ).astype(np.float32)
    seen = [np.sort(rng.choice(n_items, rng.integers(1, 20), replace=False))
            for _ in range(n_users)]
    seen[1], seen[2] = np.arange(3, n_items), np.arange(0)
    indptr = np.concatenate(([0], np.cumsum([len(s) for s in seen]))).astype(np.int64)
    return users, items, indptr, np.concatenate(seen).astype(np.int32)


def _brute_force(users: np.ndarray, items: np.ndarray, indptr: np.ndarray,
                 indices: np.ndarray, user: int) -> tuple[list[int], np.ndarray]:
    scores = items @ users[user]
    allowed = np.setdiff1d(np.arange(len(items)), indices[indptr[user] : indptr[user + 1]])
    best = allowed[np.argsort(-scores[allowed], kind="stable")][:LENGTH]
    return best.tolist(), scores[best]


@pytest.mark.parametrize("chunk_cells", [1, 1_000, 1 << 26])  # one user, a few, all at once
@pytest.mark.parametrize("first_pass_items", [1 << 20, 140])  # one pass; two: pruned by norm
def test_rank_equals_a_brute_force_ranking_without_seen_items(
        chunk_cells: int, first_pass_items: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(top_lists, "_CHUNK_CELLS", chunk_cells)
    monkeypatch.setattr(top_lists, "_FIRST_PASS_ITEMS", first_pass_items)
    users, items, indptr, indices = _random_model(40, 300, np.random.default_rng(3))
    lists = TopLists.rank(users, items, indptr, indices)
    assert lists.rows.shape == lists.scores.shape == (40, LENGTH)
    assert lists.rows.dtype == np.int32 and lists.scores.dtype == np.float32
    for user in set(range(40)) - {3}:
        rows, scores = _brute_force(users, items, indptr, indices, user)
        n = len(rows)
        assert lists.rows[user, :n].tolist() == rows
        np.testing.assert_allclose(lists.scores[user, :n], scores, rtol=1e-5, atol=1e-5)
        # Past the user's last allowed item: -inf, so `pick` knows the list is short.
        assert np.all(lists.scores[user, n:] == -np.inf)
    assert np.all(np.isfinite(lists.scores[2]))  # nothing seen: the catalogue's best
    assert np.all(lists.scores[3] == 0)  # all ties: any unseen items, none missing
    assert not set(lists.rows[3].tolist()) & set(indices[indptr[3] : indptr[4]].tolist())
    assert lists.pick(1, 3, excluded=set()) is not None
    assert lists.pick(1, 4, excluded=set()) is None  # only 3 items left to recommend


def test_a_catalogue_shorter_than_a_list_ranks_every_item() -> None:
    users, items, indptr, indices = _random_model(5, 30, np.random.default_rng(4))
    lists = TopLists.rank(users, items, indptr, indices)
    assert lists.rows.shape == (5, 30)
    for user in (0, 1, 2, 4):
        rows, _ = _brute_force(users, items, indptr, indices, user)
        assert lists.rows[user, : len(rows)].tolist() == rows
