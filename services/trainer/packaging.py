"""A fitted model packaged as the served artifact (services.model.artifact)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from services.model.artifact import ModelArtifact
from services.model.top_lists import TopLists
from services.trainer.model import FactorModel, Interactions


def package_model(model: FactorModel, data: Interactions, *, user_ids: Sequence[str],
                  item_ids: Sequence[str], top_lists_max_cells: int = 0) -> ModelArtifact:
    """Package a model with the interactions it was trained on and its index -> id maps; with
    every user's top list when users x items is at most `top_lists_max_cells` (ranked once
    here, so no recommender replica ranks them at load)."""
    items = model.item_factors.detach().numpy().astype(np.float32)
    users = model.user_factors.detach().numpy().astype(np.float32)
    gram = items.astype(np.float64).T @ items.astype(np.float64)
    seen_indptr = data.indptr()
    seen_indices = data.items.astype(np.int32)  # half of int64's size: catalogues < 2^31
    lists = None
    if 0 < data.n_users * data.n_items <= top_lists_max_cells:
        lists = TopLists.rank(users, items, seen_indptr, seen_indices)
    return ModelArtifact(
        user_factors=users,
        item_factors=items,
        user_ids=np.asarray(list(user_ids), dtype=np.str_),
        item_ids=np.asarray(list(item_ids), dtype=np.str_),
        item_popularity=np.bincount(data.items, minlength=data.n_items).astype(np.int64),
        seen_indptr=seen_indptr,
        seen_indices=seen_indices,
        item_gram=gram,
        regularization=model.config.regularization,
        reg_exponent=model.config.reg_exponent,
        alpha=model.config.alpha,
        top_lists=lists,
    )
