"""The served model file: exact round trip, no pickle, and fold-in that matches training
(the trainer packages a fitted model, services.model serves it)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from services.model.artifact import ModelArtifact
from services.model.top_lists import LENGTH, TopLists
from services.trainer.model import Interactions, TrainConfig, fit
from services.trainer.packaging import package_model

_FIELDS = [field.name for field in dataclasses.fields(ModelArtifact)]


@pytest.fixture(scope="module")
def data() -> Interactions:
    rng = np.random.default_rng(3)
    users = np.repeat(np.arange(80), 12)
    items = (users % 4) * 25 + rng.integers(0, 25, len(users))
    weights = rng.choice([1.0, 0.4, 2.0], len(users))
    return Interactions.from_arrays(users, items, weights, n_items=110)


@pytest.fixture(scope="module")
def artifact(data: Interactions) -> ModelArtifact:
    model = fit(data, TrainConfig(factors=12, epochs=5, alpha=4.0, reg_exponent=0.8))
    return package_model(
        model,
        data,
        user_ids=[f"user-{u}" for u in range(data.n_users)],
        item_ids=[f"item-é{i}" for i in range(data.n_items)],
        top_lists_max_cells=data.n_users * data.n_items,
    )


def _saved(artifact: ModelArtifact, path: Path, **overrides: object) -> Path:
    """`artifact` written as `save` does, with some entries replaced or (None) left out."""
    artifact.save(path)
    with np.load(path) as npz:
        contents = {name: npz[name] for name in npz.files}
    contents.update(overrides)
    np.savez(path, **{name: value for name, value in contents.items() if value is not None})
    return path


def test_round_trip_is_exact(artifact: ModelArtifact, tmp_path: Path) -> None:
    path = tmp_path / "model.npz"
    artifact.save(path)
    loaded = ModelArtifact.load(path)
    for name in _FIELDS:
        original, restored = getattr(artifact, name), getattr(loaded, name)
        if isinstance(original, TopLists):
            assert np.array_equal(restored.rows, original.rows)
            assert np.array_equal(restored.scores, original.scores)
        elif isinstance(original, np.ndarray):
            assert restored.dtype == original.dtype, name
            assert np.array_equal(restored, original), name
        else:
            assert restored == original, name
    assert loaded.item_ids[3] == "item-é3"
    assert [p.name for p in tmp_path.iterdir()] == ["model.npz"]


def test_file_is_plain_arrays_without_pickle(artifact: ModelArtifact, tmp_path: Path) -> None:
    path = tmp_path / "model.npz"
    artifact.save(path)
    with np.load(path, allow_pickle=False) as npz:
        assert npz["user_ids"].dtype.kind == "U"
        assert all(npz[name].dtype != object for name in npz.files)


def test_packaging_keeps_the_id_maps_popularity_and_seen_items(
    artifact: ModelArtifact, data: Interactions
) -> None:
    assert (artifact.n_users, artifact.n_items, artifact.factors) == (80, 110, 12)
    assert artifact.user_ids[5] == "user-5"
    assert artifact.item_popularity.tolist() == np.bincount(data.items, minlength=110).tolist()
    assert artifact.item_popularity[100:].sum() == 0
    for user in (0, 41, 79):
        assert artifact.seen(user).tolist() == data.items[data.users == user].tolist()
    items = artifact.item_factors.astype(np.float64)
    assert np.allclose(artifact.item_gram, items.T @ items)


def test_fold_in_of_a_known_user_reproduces_the_trained_vector(
    artifact: ModelArtifact, data: Interactions
) -> None:
    for user in range(0, 80, 7):
        mine = data.users == user
        vector = artifact.fold_in(data.items[mine], data.weights[mine])
        trained = artifact.user_factors[user]
        assert np.allclose(vector, trained, rtol=1e-3, atol=1e-5 * np.abs(trained).max())
        top = np.argsort(-(artifact.item_factors @ vector))[:10]
        assert top.tolist() == np.argsort(-(artifact.item_factors @ trained))[:10].tolist()


def test_fold_in_sums_repeated_items_and_handles_no_items(artifact: ModelArtifact) -> None:
    repeated = artifact.fold_in(np.array([3, 3, 7]), np.array([1.0, 0.5, 2.0]))
    summed = artifact.fold_in(np.array([7, 3]), np.array([2.0, 1.5]))
    assert np.allclose(repeated, summed)
    assert np.array_equal(artifact.fold_in(np.array([], np.int64)), np.zeros(12, np.float32))


def test_fold_in_rejects_bad_input(artifact: ModelArtifact) -> None:
    with pytest.raises(ValueError, match="item_indices"):
        artifact.fold_in(np.array([110]))
    with pytest.raises(ValueError, match="weights"):
        artifact.fold_in(np.array([1, 2]), np.array([1.0]))
    with pytest.raises(ValueError, match="weights"):
        artifact.fold_in(np.array([1]), np.array([-1.0]))


def test_load_rejects_other_files(artifact: ModelArtifact, tmp_path: Path) -> None:
    partial = tmp_path / "partial.npz"
    np.savez(partial, user_factors=artifact.user_factors)
    with pytest.raises(ValueError, match="missing"):
        ModelArtifact.load(partial)
    newer = _saved(artifact, tmp_path / "newer.npz", format_version=np.asarray(99))
    with pytest.raises(ValueError, match="format 99: this version reads formats 1, 2"):
        ModelArtifact.load(newer)


def test_top_lists_ship_within_the_budget_and_older_files_still_load(
        artifact: ModelArtifact, data: Interactions, tmp_path: Path) -> None:
    lists = artifact.top_lists
    assert lists is not None and lists.rows.shape == (80, min(LENGTH, 110))
    for user in (0, 41, 79):
        scores = artifact.item_factors @ artifact.user_factors[user]
        scores[artifact.seen(user)] = -np.inf
        best = np.argsort(-scores, kind="stable")[:10]
        assert lists.rows[user, :10].tolist() == best.tolist()
        assert not set(lists.rows[user][np.isfinite(lists.scores[user])]) & set(
            artifact.seen(user).tolist())
    model = fit(data, TrainConfig(factors=4, epochs=1))
    assert package_model(model, data, user_ids=artifact.user_ids.tolist(),
                         item_ids=artifact.item_ids.tolist(),
                         top_lists_max_cells=data.n_users * data.n_items - 1).top_lists is None
    # Format 1 (written before lists were shipped) loads without them.
    older = _saved(artifact, tmp_path / "v1.npz", format_version=np.asarray(1),
                   top_rows=None, top_scores=None)
    loaded = ModelArtifact.load(older)
    assert loaded.top_lists is None
    assert np.array_equal(loaded.user_factors, artifact.user_factors)


def test_inconsistent_shapes_are_rejected(artifact: ModelArtifact) -> None:
    with pytest.raises(ValueError, match="item_ids"):
        dataclasses.replace(artifact, item_ids=artifact.item_ids[:-1])
    assert artifact.top_lists is not None
    short = TopLists(rows=artifact.top_lists.rows[:-1], scores=artifact.top_lists.scores[:-1])
    with pytest.raises(ValueError, match="top lists"):
        dataclasses.replace(artifact, top_lists=short)


@pytest.mark.parametrize(("field", "change", "message"), [
    ("seen_indices", lambda a: a + 10_000, "seen_indices: out of range"),
    ("seen_indices", lambda a: a - 10_000, "seen_indices: out of range"),
    ("seen_indptr", lambda a: np.where(np.arange(len(a)) == 1, a[2] + 5, a), "never decrease"),
    ("item_popularity", lambda a: -a - 1, "item_popularity"),
])
def test_indices_out_of_range_are_rejected(artifact: ModelArtifact, field: str,
                                           change: Any, message: str) -> None:
    """Serving indexes arrays with them: a file with such indices is not a model."""
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(artifact, **{field: change(getattr(artifact, field))})


def test_top_list_rows_out_of_range_are_rejected(artifact: ModelArtifact) -> None:
    assert artifact.top_lists is not None
    beyond = dataclasses.replace(artifact.top_lists, rows=artifact.top_lists.rows + 1)
    with pytest.raises(ValueError, match="top lists: rows out of range"):
        dataclasses.replace(artifact, top_lists=beyond)
