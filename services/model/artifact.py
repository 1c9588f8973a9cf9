"""The served model: factors, id maps and what fold-in needs, as one pickle-free ``.npz`` file.

It depends on numpy only, so the recommender loads a model in milliseconds without torch. The
trainer makes one from a fitted model (``services.trainer.packaging``). What makes a valid
artifact is checked in one place, ``__post_init__``, which every constructor and ``load`` pass.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from services.model.top_lists import LENGTH, TopLists

# 2: the trainer's top lists may ride along (`top_rows`, `top_scores`); version 1 files (no
# lists) still load, and a newer version than this code reads is refused by name.
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
_ARRAYS = (
    "user_factors",
    "item_factors",
    "user_ids",
    "item_ids",
    "item_popularity",
    "seen_indptr",
    "seen_indices",
    "item_gram",
)
_SCALARS = ("regularization", "reg_exponent", "alpha")
_TOP_LISTS = ("top_rows", "top_scores")
_HASH_CHUNK_BYTES = 1 << 20


class ArtifactRefused(ValueError):
    """A downloaded file that must not be served: not the file the trainer registered
    (`reason` "checksum"), or not a valid model ("invalid")."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def sha256_of(path: str | os.PathLike[str]) -> str:
    """The file's SHA-256, hex: the trainer records it with the version, readers check it."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(_HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True, eq=False)
class ModelArtifact:
    """Everything serving needs; row i of the factors belongs to ``user_ids[i]``/``item_ids[i]``.

    ``item_gram`` (YᵀY), ``regularization``, ``reg_exponent`` and ``alpha`` let ``fold_in``
    solve the training's user equation for a user the model has not seen. ``top_lists``, when
    the trainer ranked them, are every user's best items (services.model.top_lists).
    """

    user_factors: np.ndarray  # (n_users, factors) float32
    item_factors: np.ndarray  # (n_items, factors) float32
    user_ids: np.ndarray  # (n_users,) unicode
    item_ids: np.ndarray  # (n_items,) unicode
    item_popularity: np.ndarray  # (n_items,) int64: distinct training users per item
    seen_indptr: np.ndarray  # (n_users + 1,) int64: CSR of each user's training items
    seen_indices: np.ndarray  # (nnz,) int32 (the trainer's) or int64
    item_gram: np.ndarray  # (factors, factors) float64
    regularization: float
    reg_exponent: float
    alpha: float
    top_lists: TopLists | None = None

    def __post_init__(self) -> None:
        if self.user_factors.ndim != 2 or len(self.seen_indptr) == 0:
            raise ValueError("user_factors and seen_indptr: malformed")
        n_users, n_items, factors = self.n_users, self.n_items, self.factors
        expected = {
            "item_factors": (n_items, factors),
            "user_ids": (n_users,),
            "item_ids": (n_items,),
            "item_popularity": (n_items,),
            "seen_indptr": (n_users + 1,),
            "seen_indices": (int(self.seen_indptr[-1]),),
            "item_gram": (factors, factors),
        }
        for name, shape in expected.items():
            if getattr(self, name).shape != shape:
                raise ValueError(f"{name}: shape {getattr(self, name).shape}, expected {shape}")
        # Indices are used to index arrays while serving: out of range, a request would fail
        # (or read another user's items), so a file with them is not a model.
        indptr, indices = self.seen_indptr, self.seen_indices
        if indptr[0] != 0 or np.any(np.diff(indptr) < 0):
            raise ValueError("seen_indptr: must start at 0 and never decrease")
        if len(indices) and (indices.min() < 0 or indices.max() >= n_items):
            raise ValueError(f"seen_indices: out of range [0, {n_items})")
        if np.any(self.item_popularity < 0):
            raise ValueError("item_popularity: must not be negative")
        lists = self.top_lists
        shape = (n_users, min(LENGTH, n_items))
        if lists is not None and not lists.rows.shape == lists.scores.shape == shape:
            raise ValueError(f"top lists: shape {lists.rows.shape}, expected {shape}")
        if lists is not None and lists.rows.size and (
                lists.rows.min() < 0 or lists.rows.max() >= n_items):
            raise ValueError(f"top lists: rows out of range [0, {n_items})")

    @property
    def n_users(self) -> int:
        return int(self.user_factors.shape[0])

    @property
    def n_items(self) -> int:
        return int(self.item_factors.shape[0])

    @property
    def factors(self) -> int:
        return int(self.user_factors.shape[1])

    @classmethod
    def from_factors(cls, user_factors: np.ndarray, item_factors: np.ndarray,
                     seen: np.ndarray, *, regularization: float = 0.05,
                     reg_exponent: float = 1.0, alpha: float = 10.0) -> ModelArtifact:
        """An artifact for factors made elsewhere (benchmarks, tests): users "u0".., items
        "i0"..; `seen` (users, n) holds each user's n training items."""
        items = item_factors.astype(np.float32)
        n_users, per_user = seen.shape
        return cls(
            user_factors=user_factors.astype(np.float32), item_factors=items,
            user_ids=np.asarray([f"u{n}" for n in range(n_users)], dtype=np.str_),
            item_ids=np.asarray([f"i{n}" for n in range(len(items))], dtype=np.str_),
            item_popularity=np.bincount(seen.ravel(), minlength=len(items)).astype(np.int64),
            seen_indptr=np.arange(0, seen.size + 1, per_user, dtype=np.int64),
            seen_indices=seen.ravel().astype(np.int64),
            item_gram=items.astype(np.float64).T @ items.astype(np.float64),
            regularization=regularization, reg_exponent=reg_exponent, alpha=alpha,
        )

    def seen(self, user: int) -> np.ndarray:
        """Indices of the items ``user`` interacted with in training (to exclude them)."""
        return self.seen_indices[self.seen_indptr[user] : self.seen_indptr[user + 1]]

    def fold_in(self, item_indices: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        """Factor vector for a new user from their items, by the training's exact user solve.

        Repeated items have their weights summed, as in training; no items gives a zero vector.
        The maths mirrors the trainer's ``_solve`` and ``_row_penalty`` (kept torch-free here);
        tests check that folding in a trained user's items gives back their trained vector.
        """
        idx = np.asarray(item_indices, dtype=np.int64).reshape(-1)
        w = np.ones(len(idx)) if weights is None else np.asarray(weights, np.float64).reshape(-1)
        if len(w) != len(idx):
            raise ValueError("weights: must have one value per item index")
        if len(idx) and (idx.min() < 0 or idx.max() >= self.n_items):
            raise ValueError(f"item_indices: out of range [0, {self.n_items})")
        if not np.all(np.isfinite(w)) or np.any(w <= 0):
            raise ValueError("weights: must be finite and positive")
        unique, inverse = np.unique(idx, return_inverse=True)
        summed = np.bincount(inverse, weights=w, minlength=len(unique))
        vectors = self.item_factors[unique].astype(np.float64)
        extra = self.alpha * summed
        penalty = self.regularization * (self.n_items + extra.sum()) ** self.reg_exponent
        lhs = self.item_gram + (vectors.T * extra) @ vectors + penalty * np.eye(self.factors)
        return np.linalg.solve(lhs, vectors.T @ (1 + extra)).astype(np.float32)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write atomically (temporary file + rename), so a reader never sees half a model."""
        target = Path(path)
        tmp = target.with_name(f".{target.name}.tmp")
        contents: dict[str, Any] = {"format_version": np.asarray(FORMAT_VERSION)}
        contents.update((name, np.asarray(getattr(self, name))) for name in (*_ARRAYS, *_SCALARS))
        if self.top_lists is not None:
            contents.update(top_rows=self.top_lists.rows, top_scores=self.top_lists.scores)
        with tmp.open("wb") as f:
            np.savez(f, **contents)
        tmp.replace(target)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ModelArtifact:
        """Read a file written by ``save``; ValueError when it is not one."""
        with np.load(path, allow_pickle=False) as npz:
            missing = {"format_version", *_ARRAYS, *_SCALARS} - set(npz.files)
            if missing:
                raise ValueError(f"not a model artifact: missing {', '.join(sorted(missing))}")
            version = int(npz["format_version"])
            if version not in READABLE_VERSIONS:
                raise ValueError(f"artifact format {version}: this version reads formats "
                                 f"{', '.join(map(str, READABLE_VERSIONS))} (a newer trainer "
                                 "wrote it; upgrade the recommender)")
            fields: dict[str, Any] = {name: npz[name] for name in _ARRAYS}
            fields.update((name, float(npz[name])) for name in _SCALARS)
            if set(_TOP_LISTS) <= set(npz.files):
                fields["top_lists"] = TopLists(rows=npz["top_rows"], scores=npz["top_scores"])
        return cls(**fields)
