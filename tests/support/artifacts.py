"""Small model artifacts for the recommender's unit and integration tests."""

from __future__ import annotations

import numpy as np

from services.model.artifact import ModelArtifact
from services.trainer.model import Interactions, TrainConfig, fit
from services.trainer.packaging import package_model


def small_artifact(*, n_users: int = 60, n_items: int = 120, factors: int = 8,
                   seed: int = 0) -> ModelArtifact:
    """A model trained on clustered synthetic data: users "u0".., items "i0"..; each user
    interacts with about 10 items, mostly from their own cluster."""
    rng = np.random.default_rng(seed)
    clusters = 4
    users, items = [], []
    for user in range(n_users):
        cluster = user % clusters
        own = np.arange(cluster, n_items, clusters)
        picks = rng.choice(own, size=8, replace=False).tolist()
        picks += rng.choice(n_items, size=2, replace=False).tolist()
        users += [user] * len(picks)
        items += picks
    data = Interactions.from_arrays(np.array(users), np.array(items), n_users=n_users,
                                    n_items=n_items)
    model = fit(data, TrainConfig(factors=factors, epochs=4, num_threads=1))
    return package_model(model, data, user_ids=[f"u{u}" for u in range(n_users)],
                         item_ids=[f"i{i}" for i in range(n_items)])


def clustered_artifact(*, n_items: int = 5_003, n_users: int = 400, factors: int = 16,
                       topics: int = 40, seen_per_user: int = 20) -> ModelArtifact:
    """Factors with the topic structure trained factors have (what an item index uses), and
    norms spread as theirs are; users "u0".., items "i0"..; not trained, so it is cheap at
    thousands of items."""
    rng = np.random.default_rng(7)
    centres = rng.normal(0, 1, (topics, factors))

    def around_topics(n: int) -> np.ndarray:
        points = centres[rng.integers(0, topics, n)] + rng.normal(0, 0.15, (n, factors))
        return (points * rng.lognormal(0, 0.5, (n, 1))).astype(np.float32)

    items = around_topics(n_items)
    seen = np.sort(rng.choice(n_items, (n_users, seen_per_user)), axis=1)
    return ModelArtifact.from_factors(around_topics(n_users), items, seen)
