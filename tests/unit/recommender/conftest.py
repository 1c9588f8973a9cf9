"""An in-memory champion source, and the recommender served on port 0 without Redis or Kafka."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from prometheus_client import CollectorRegistry

from recsys.recommender.v1 import recommender_pb2_grpc
from scripts.localstack.components import free_port
from services.core import server
from services.core.errors import Unavailable
from services.model.artifact import ModelArtifact
from services.model.lineage import Lineage
from services.model.versions import CHAMPION, VersionInfo
from services.recommender.app import RecommenderApp
from services.recommender.settings import RecommenderSettings
from tests.unit.recommender.artifacts import small_artifact


@dataclass
class FakeSource:
    """Stands in for MLflow: `champion_version` names the champion in `artifacts`."""

    artifacts: dict[str, ModelArtifact] = field(default_factory=dict)
    champion_version: str | None = None
    fail: bool = False

    def champion(self) -> VersionInfo | None:
        if self.fail:
            raise Unavailable("MLflow at http://127.0.0.1:1 failed to look up the champion")
        if self.champion_version is None:
            return None
        artifact = self.artifacts[self.champion_version]
        return VersionInfo(
            version=self.champion_version, model_name="test", aliases=(CHAMPION,),
            run_id=f"run-{self.champion_version}",
            source=f"mlflow-artifacts:/1/run-{self.champion_version}/artifacts/model",
            metrics={"precision_at_10": 0.25, "ndcg_at_10": 0.5, "users_evaluated": 40.0},
            lineage=Lineage(topic="interactions", row_count=600, content_hash="ab" * 32,
                            partition_offsets={0: 400, 1: 200}, user_count=artifact.n_users,
                            item_count=artifact.n_items),
            created_at_ms=0,
        )

    def load(self, version: VersionInfo, dst: Path) -> ModelArtifact:
        path = dst / "model.npz"
        self.artifacts[version.version].save(path)
        return ModelArtifact.load(path)


@dataclass
class Served:
    running: server.RunningServer
    app: RecommenderApp
    source: FakeSource
    stub: recommender_pb2_grpc.RecommenderServiceStub
    registry: CollectorRegistry

    def sample(self, metric: str, **labels: str) -> float:
        return self.registry.get_sample_value(metric, labels) or 0.0


def offline_settings(**overrides: object) -> RecommenderSettings:
    """Settings whose Redis and Kafka are closed ports: served without cache or history."""
    values: dict[str, object] = {
        "redis_url": f"redis://127.0.0.1:{free_port()}/0", "history_consumer": False,
        "local_cache_size": 0, "poll_interval_s": 0.05, "max_k": 50,
    }
    return RecommenderSettings(**{**values, **overrides})  # type: ignore[arg-type]


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    """The recommender with a fake MLflow that has no champion yet."""
    source = FakeSource(artifacts={"1": small_artifact(), "2": small_artifact(seed=1)})
    settings = offline_settings()
    registry = CollectorRegistry()
    app = RecommenderApp(settings, registry, source=source)
    running = await server.start(app, settings, registry)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        yield Served(running, app, source, recommender_pb2_grpc.RecommenderServiceStub(channel),
                     registry)
    await running.stop(1.0)
