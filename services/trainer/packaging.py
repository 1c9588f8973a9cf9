"""A fitted model packaged as the served artifact (services.model.artifact)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from services.model.artifact import ModelArtifact
from services.trainer.model import FactorModel, Interactions


def package_model(model: FactorModel, data: Interactions, *, user_ids: Sequence[str],
                  item_ids: Sequence[str]) -> ModelArtifact:
    """Package a model with the interactions it was trained on and its index -> id maps."""
    items = model.item_factors.detach().numpy().astype(np.float32)
    gram = items.astype(np.float64).T @ items.astype(np.float64)
    return ModelArtifact(
        user_factors=model.user_factors.detach().numpy().astype(np.float32),
        item_factors=items,
        user_ids=np.asarray(list(user_ids), dtype=np.str_),
        item_ids=np.asarray(list(item_ids), dtype=np.str_),
        item_popularity=np.bincount(data.items, minlength=data.n_items).astype(np.int64),
        seen_indptr=data.indptr(),
        seen_indices=data.items.astype(np.int64),
        item_gram=gram,
        regularization=model.config.regularization,
        reg_exponent=model.config.reg_exponent,
        alpha=model.config.alpha,
    )
