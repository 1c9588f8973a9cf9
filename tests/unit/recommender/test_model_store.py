"""The model store's poll against a fake champion source: a refused artifact is counted by
reason and never replaces the served version, nor is it downloaded again."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry

from services.model.artifact import ArtifactRefused, ModelArtifact
from services.model.versions import VersionInfo
from services.recommender.metrics import RecommenderMetrics
from services.recommender.model_store import ModelStore
from tests.support.artifacts import small_artifact


def _version(number: str) -> VersionInfo:
    return VersionInfo(version=number, model_name="m", aliases=("champion",), run_id="r",
                       source="mlflow-artifacts:/1/r/artifacts/model", metrics={},
                       lineage=None, created_at_ms=0, artifact_sha256="ab" * 32)


class Source:
    """Names `champion`; serves `good`, refuses every other version."""

    def __init__(self, good: str) -> None:
        self.champion_version = _version(good)
        self.good = good
        self.downloads: list[str] = []

    def champion(self) -> VersionInfo | None:
        return self.champion_version

    def load(self, version: VersionInfo, dst: Path) -> ModelArtifact:
        self.downloads.append(version.version)
        if version.version != self.good:
            raise ArtifactRefused("checksum", "not the registered file")
        return small_artifact()


def test_a_refused_version_is_counted_and_the_old_one_keeps_serving() -> None:
    registry = CollectorRegistry()
    source = Source(good="1")
    store = ModelStore(source, model_name="m", poll_interval_s=1,
                       metrics=RecommenderMetrics.create(registry))
    assert store.poll_once()
    source.champion_version = _version("2")
    assert not store.poll_once()
    assert not store.poll_once()  # the same version is not fetched again
    assert store.current is not None and store.current.version == "1"
    assert source.downloads == ["1", "2"]
    assert registry.get_sample_value("recsys_recommender_models_refused_total",
                                     {"reason": "checksum"}) == 1
