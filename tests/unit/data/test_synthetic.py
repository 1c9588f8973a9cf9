"""The synthetic generator: deterministic, chunk-independent, and shaped like real data."""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import pytest
import torch

from recsys.events.v1 import interaction_pb2
from services.data.synthetic import BLOCK_EVENTS, SyntheticData, SyntheticSpec
from services.ingest.validation import Limits, Validator
from services.trainer.evaluation import evaluate, stratified_split
from services.trainer.model import TrainConfig, fit

SPEC = SyntheticSpec(users=2000, items=1000, events=50_000, seed=3)


@pytest.fixture(scope="module")
def events() -> list[interaction_pb2.Interaction]:
    return list(SyntheticData(SPEC).events())


def test_the_same_seed_gives_the_same_events_and_another_seed_others(
    events: list[interaction_pb2.Interaction],
) -> None:
    again = list(itertools.islice(SyntheticData(SPEC).events(), 1000))
    assert [e.SerializeToString() for e in again] == [e.SerializeToString()
                                                      for e in events[:1000]]
    other = SyntheticSpec(users=2000, items=1000, events=50_000, seed=4)
    assert [e.item_id for e in itertools.islice(SyntheticData(other).events(), 100)] != [
        e.item_id for e in events[:100]]


def test_blocks_are_independent_of_each_other() -> None:
    data = SyntheticData(SPEC)
    later = data.block(3)
    for _ in data.blocks():
        pass
    assert np.array_equal(data.block(3).item, later.item)
    assert later.first == 3 * BLOCK_EVENTS


def test_events_have_stable_unique_ids_and_increasing_times(
    events: list[interaction_pb2.Interaction],
) -> None:
    assert len(events) == SPEC.events
    assert events[0].event_id == "syn-3-0" and events[-1].event_id == f"syn-3-{SPEC.events - 1}"
    times = [e.occurred_at.ToNanoseconds() for e in events]
    assert all(a < b for a, b in itertools.pairwise(times))
    start = int(SPEC.start.timestamp() * 1e9)
    assert start <= times[0] and times[-1] < start + SPEC.days * 86400e9


def test_every_event_passes_the_service_validation(
    events: list[interaction_pb2.Interaction],
) -> None:
    validator = Validator(Limits())
    latest = validator.latest_seconds(SPEC.start.timestamp() + 365 * 86400)
    assert [validator.problem(e, latest) for e in events] == [None] * len(events)


def test_popularity_and_activity_are_skewed(events: list[interaction_pb2.Interaction]) -> None:
    items = sorted(Counter(e.item_id for e in events).values(), reverse=True)
    users = sorted(Counter(e.user_id for e in events).values(), reverse=True)
    assert sum(items[:SPEC.items // 10]) > 0.5 * len(events)  # top 10% of items
    assert sum(users[:SPEC.users // 10]) > 0.25 * len(events)  # top 10% of users
    assert items[0] > 20 * np.median(items)


def test_users_keep_to_their_favourite_clusters() -> None:
    def in_favourites(data: SyntheticData) -> np.ndarray:
        block = data.block(0)
        return (data.item_cluster[block.item][:, None] == data.favourites[block.user]).any(1)

    assert 0.9 <= in_favourites(SyntheticData(SPEC)).mean() < 1.0  # but some of the 10% explored
    focused = SyntheticSpec(users=200, items=300, events=5000, explore=0.0)
    assert in_favourites(SyntheticData(focused)).all()


def test_the_number_of_clusters_grows_with_the_catalogue() -> None:
    counts = [SyntheticSpec(users=1, items=n, events=0).cluster_count
              for n in (1, 1000, 100_000)]
    assert counts == [1, 16, 158]
    assert SyntheticSpec(users=1, items=1000, events=0, clusters=7).cluster_count == 7
    assert len(np.unique(SyntheticData(SPEC).item_cluster)) > 10


def test_a_factor_model_beats_popularity_on_the_protocol_split() -> None:
    """The data carries personal signal: what popularity alone cannot predict, a factor model
    learns back; but not all of it (the data is not trivially separable)."""
    data = SyntheticData(SyntheticSpec(users=600, items=800, events=20_000, seed=5))
    users = np.concatenate([b.user for b in data.blocks()])
    items = np.concatenate([b.item for b in data.blocks()])
    train, test = stratified_split(users, items, n_users=data.spec.users,
                                   n_items=data.spec.items)
    model = fit(train, TrainConfig(factors=32, num_threads=1))
    counts = torch.from_numpy(np.bincount(train.items, minlength=train.n_items)).float()
    popularity = evaluate(lambda batch: counts.expand(len(batch), -1), train, test).ndcg
    personal = evaluate(model, train, test).ndcg
    assert personal > 1.5 * popularity
    assert personal < 0.6


def test_chosen_items_follow_the_latent_factors() -> None:
    data = SyntheticData(SPEC)
    block = data.block(0)
    random_items = np.random.default_rng(0).integers(0, SPEC.items, len(block.user))
    chosen = data.affinity(block.user, block.item).mean()
    assert chosen > data.affinity(block.user, random_items).mean() + 0.5


def test_ratings_follow_affinity_and_types_follow_the_mix() -> None:
    data = SyntheticData(SPEC)
    block = data.block(1)
    rated = block.type == interaction_pb2.INTERACTION_TYPE_RATING
    assert 0.08 < rated.mean() < 0.16
    values, affinity = block.value[rated], data.affinity(block.user, block.item)[rated]
    assert set(np.unique(values)) <= {x / 2 for x in range(1, 11)}
    assert np.corrcoef(values, affinity)[0, 1] > 0.5
    assert np.isnan(block.value[block.type == interaction_pb2.INTERACTION_TYPE_VIEW]).all()


@pytest.mark.parametrize("bad", [
    {"users": 0}, {"items": 0}, {"events": -1}, {"days": 0}, {"clusters": -1},
    {"favourite_clusters": 0}, {"explore": 1.5},
    {"type_mix": {"teleport": 1.0}}, {"type_mix": {}},
])
def test_bad_specs_are_refused(bad: dict[str, object]) -> None:
    fields: dict[str, object] = {"users": 10, "items": 10, "events": 10, **bad}
    with pytest.raises(ValueError):
        SyntheticSpec(**fields)  # type: ignore[arg-type]
