"""The recommender's catalogue state, without servers: what a batch of catalogue records and
the passing of time make of the served model's items."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from recsys.events.v1.catalog_pb2 import CatalogChange, Item
from services.core.consumer import Batch, Record
from services.recommender.catalog_keeper import CatalogKeeper
from services.recommender.model_store import LoadedModel
from services.recommender.scoring import Query, Scorer
from tests.support.artifacts import small_artifact

NOW = 1_800_000_000.0


@pytest.fixture(scope="module")
def model() -> LoadedModel:
    artifact = small_artifact()
    return LoadedModel(model_name="m", version="1", alias="champion", run_id="r",
                       loaded_at=datetime.now(UTC), metrics={}, lineage=None,
                       user_count=artifact.n_users, item_count=artifact.n_items,
                       factors=artifact.factors, scorer=Scorer(artifact))


def stamp(seconds: float) -> Timestamp:
    return Timestamp(seconds=int(seconds))


def batch(*items: Item, start: int = 0) -> Batch[CatalogChange]:
    return Batch([Record(0, start + n, CatalogChange(item=item)) for n, item in enumerate(items)])


def answer(model: LoadedModel, keeper: CatalogKeeper, **query: object) -> list[str]:
    state = keeper.state(model)
    [(_, ranked)] = model.scorer.recommend_many([Query(
        "u1", 120, items=state.items_for(query.pop("categories", ())), **query)])  # type: ignore[arg-type]
    return [item for item, _ in ranked]


def test_an_item_leaves_answers_when_its_window_closes_and_enters_when_one_opens(
        model: LoadedModel) -> None:
    clock = [NOW]
    keeper = CatalogKeeper(clock=lambda: clock[0])
    keeper.state(model)
    keeper.apply(batch(
        Item(item_id="i5", hidden=False, available_until=stamp(NOW + 60)),
        Item(item_id="i6", hidden=False, available_from=stamp(NOW + 30))))
    first = keeper.state(model)
    assert "i5" in answer(model, keeper) and "i6" not in answer(model, keeper)
    clock[0] = NOW + 30
    assert "i6" in answer(model, keeper)
    clock[0] = NOW + 60
    assert "i5" not in answer(model, keeper)
    assert keeper.state(model).version != first.version  # cached answers are not reused


def test_a_category_filter_and_a_hide_of_a_model_item(model: LoadedModel) -> None:
    keeper = CatalogKeeper(clock=lambda: NOW)
    keeper.apply(batch(*(Item(item_id=f"i{n}", hidden=False, categories=[f"c{n % 4}"])
                         for n in range(120))))
    assert {int(i[1:]) % 4 for i in answer(model, keeper, categories=["c2"])} == {2}
    keeper.apply(batch(Item(item_id="i2", hidden=True, categories=["c2"]), start=120))
    assert "i2" not in answer(model, keeper, categories=["c2"])
    assert "i2" not in answer(model, keeper)
