"""The champion reader against a real MLflow server, reading what the trainer's registry wrote:
the version the alias names and the very artifact registered; None before there is a
champion; Unavailable, naming the server, once MLflow is stopped."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from scripts.localstack.components import MlflowServer
from services.core.errors import Unavailable
from services.model.artifact import ModelArtifact
from services.model.champion import ChampionReader, mlflow_session
from services.model.lineage import Lineage
from services.model.versions import CHAMPION, VersionInfo
from services.trainer.registry import MlflowRegistry
from tests.support.model_registry import register

pytestmark = pytest.mark.integration

LINEAGE = Lineage(topic="interactions", row_count=150, content_hash="ef" * 32,
                  partition_offsets={0: 90, 1: 60}, user_count=30, item_count=50)


def artifact(seed: int) -> ModelArtifact:
    rng = np.random.default_rng(seed)
    return ModelArtifact.from_factors(rng.normal(size=(30, 4)), rng.normal(size=(50, 4)),
                                      rng.integers(0, 50, size=(30, 5)))


def register_version(tracking_uri: str, model_name: str, model: ModelArtifact,
                     workdir: Path) -> VersionInfo:
    """A new version of `model`, registered as a training job does (not yet champion)."""
    return register(tracking_uri, model_name, model, workdir, lineage=LINEAGE,
                    metrics={"ndcg_at_10": 0.3, "users_evaluated": 30.0})


def same(a: ModelArtifact, b: ModelArtifact) -> bool:
    return all(np.array_equal(getattr(a, f.name), getattr(b, f.name))
               for f in dataclasses.fields(ModelArtifact))


def writer_and_reader(tracking_uri: str, model_name: str) -> tuple[MlflowRegistry,
                                                                   ChampionReader]:
    return (MlflowRegistry(tracking_uri=tracking_uri, model_name=model_name,
                           experiment="model-tests"),
            ChampionReader(tracking_uri=tracking_uri, model_name=model_name, timeout_s=10,
                           session=mlflow_session(retries=1)))


def test_the_reader_follows_the_alias_the_trainer_moves(
        mlflow_server: MlflowServer, model_name: str, tmp_path: Path) -> None:
    uri = mlflow_server.tracking_uri
    registry, reader = writer_and_reader(uri, model_name)
    assert reader.champion() is None  # no registered model yet
    first = register_version(uri, model_name, artifact(1), tmp_path)
    assert reader.champion() is None  # a version, but no alias

    registry.set_champion(first.version)
    champion = reader.champion()
    assert champion == dataclasses.replace(first, aliases=(CHAMPION,))
    assert champion is not None and champion.source.startswith("mlflow-artifacts:/")
    dst = tmp_path / "download-1"
    dst.mkdir()
    assert same(reader.load(champion, dst), artifact(1))
    assert [p.name for p in dst.iterdir()] == ["model.npz"]

    second = register_version(uri, model_name, artifact(2), tmp_path)
    assert reader.champion() == dataclasses.replace(first, aliases=(CHAMPION,))
    registry.set_champion(second.version)
    champion = reader.champion()
    assert champion is not None and champion.version == second.version
    dst = tmp_path / "download-2"
    dst.mkdir()
    assert same(reader.load(champion, dst), artifact(2))


def test_a_stopped_mlflow_is_unavailable(own_mlflow: MlflowServer, model_name: str,
                                         tmp_path: Path) -> None:
    registry, reader = writer_and_reader(own_mlflow.tracking_uri, model_name)
    version = register_version(own_mlflow.tracking_uri, model_name, artifact(3), tmp_path)
    registry.set_champion(version.version)
    champion = reader.champion()
    assert champion is not None

    own_mlflow.stop()
    server = f"MLflow at {own_mlflow.tracking_uri}"
    with pytest.raises(Unavailable, match=f"{server} failed to look up the champion: "):
        reader.champion()
    with pytest.raises(Unavailable, match=f"{server} failed to download version "
                                          f"{champion.version}: "):
        reader.load(champion, tmp_path)
