"""A dataset store with a small learnable dataset, and an in-memory stand-in for MLflow."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from services.trainer.dataset import DatasetStore
from services.trainer.metrics import TrainerMetrics
from tests.support.trainer_fakes import FakeRegistry, clustered_events


@pytest.fixture
def store(tmp_path: Path) -> Iterator[DatasetStore]:
    store = DatasetStore(tmp_path / "trainer.sqlite3")
    yield store
    store.close()


@pytest.fixture
def filled_store(store: DatasetStore) -> DatasetStore:
    events = clustered_events()
    store.append(events, topic="interactions", next_offsets={0: len(events)})
    return store


@pytest.fixture
def fake_registry() -> FakeRegistry:
    return FakeRegistry()


@pytest.fixture
def metrics() -> TrainerMetrics:
    return TrainerMetrics.create(CollectorRegistry())
