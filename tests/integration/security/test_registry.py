"""A registry only the trainer can write, against a real MLflow with its basic-auth app (as
the local stack runs it): who may read and write, the artifact's SHA-256 recorded by the
trainer and checked by the recommender, and who promoted which version."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import requests
from prometheus_client import CollectorRegistry

from recsys.recommender.v1 import recommender_pb2
from recsys.trainer.v1 import trainer_pb2, trainer_pb2_grpc
from scripts.localstack.components import MlflowServer, RedisServer, TansuBroker
from scripts.localstack.pki import Pki
from scripts.mlflow_users import RECOMMENDER, TRAINER
from services.model.artifact import sha256_of
from services.model.champion import ChampionReader, mlflow_session
from services.model.lineage import Lineage
from services.model.versions import ARTIFACT_SHA256_TAG, PROMOTED_BY_TAG, VersionInfo
from services.trainer.app import TrainerApp
from services.trainer.registry import MlflowRegistry
from services.trainer.settings import TrainerSettings
from tests.support.artifacts import small_artifact
from tests.support.grpc_calls import client_tls, secure_channel
from tests.support.loop_thread import serving
from tests.support.model_registry import publish, register
from tests.support.polling import eventually_async
from tests.support.recommender_replica import ReplicaFactory

pytestmark = pytest.mark.integration

ALIAS = "/api/2.0/mlflow/registered-models/alias"


@pytest.fixture(scope="module")
def registry_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-auth"), authenticated=True)
    try:
        yield server.start().wait_ready(90)
    finally:
        server.stop()


@pytest.fixture
def as_trainer(registry_server: MlflowServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """This process' MLflow client (the trainer's registry) signs in as the trainer."""
    user, password = registry_server.credentials(TRAINER)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)


def _stored_file(server: MlflowServer, version: VersionInfo) -> Path:
    """Where MLflow keeps the version's artifact on disk (its artifact store)."""
    path = version.source.removeprefix("mlflow-artifacts:").strip("/")
    return server.data_dir / "artifacts" / path / "model.npz"


@pytest.mark.usefixtures("as_trainer")
def test_only_the_trainer_writes_the_registry(
        registry_server: MlflowServer, model_name: str, tmp_path: Path) -> None:
    uri = registry_server.tracking_uri
    version = publish(uri, model_name, small_artifact(), tmp_path)  # as the trainer
    move = {"name": model_name, "alias": "champion", "version": version}
    assert requests.get(f"{uri}{ALIAS}", params=move, timeout=10).status_code == 401
    assert requests.post(f"{uri}{ALIAS}", json=move, timeout=10).status_code == 401
    recommender = registry_server.credentials(RECOMMENDER)
    assert requests.post(f"{uri}{ALIAS}", json=move, auth=recommender,
                         timeout=10).status_code == 403
    reader = ChampionReader(tracking_uri=uri, model_name=model_name, timeout_s=10,
                            session=mlflow_session(retries=0, auth=recommender))
    champion = reader.champion()
    assert champion is not None and champion.version == version
    # The recommender reads the version and its file, which is the one registered.
    reader.load(champion, tmp_path)
    assert champion.artifact_sha256 == sha256_of(tmp_path / "model.npz")
    # Nor can it replace that file through MLflow's artifact proxy.
    stored = champion.source.removeprefix("mlflow-artifacts:").strip("/")
    assert requests.put(f"{uri}/api/2.0/mlflow-artifacts/artifacts/{stored}/model.npz",
                        data=b"x", auth=recommender, timeout=10).status_code == 403


def _register_file(uri: str, model_name: str, path: Path) -> VersionInfo:
    """`path` (a model.npz, valid or not) registered as the trainer registers a model."""
    lineage = Lineage(topic="t", row_count=1, content_hash="ab" * 32, partition_offsets={0: 1},
                      user_count=1, item_count=1)
    registry = MlflowRegistry(tracking_uri=uri, model_name=model_name, experiment="security")
    run_id = registry.start_run(job_id="broken", params={}, lineage=lineage, tags={})
    return registry.register(run_id, metrics={}, lineage=lineage, artifact=path,
                             hyperparameters={}, tags={})


@pytest.mark.usefixtures("as_trainer")
async def test_the_recommender_serves_only_what_the_trainer_registered(
        registry_server: MlflowServer, redis_server: RedisServer, replica: ReplicaFactory,
        model_name: str, tmp_path: Path) -> None:
    uri = registry_server.tracking_uri
    trainer = MlflowRegistry(tracking_uri=uri, model_name=model_name, experiment="security")
    first = publish(uri, model_name, small_artifact(seed=1), tmp_path)
    user, password = registry_server.credentials(RECOMMENDER)
    async with replica(mlflow_tracking_uri=uri, redis_url=redis_server.url,
                       mlflow_username=user, mlflow_password=password) as r:
        await r.wait_for_version(first)

        async def refused(reason: str) -> None:
            await eventually_async(
                lambda: r.metric("recsys_recommender_models_refused_total", reason=reason) == 1,
                timeout=30, what=f"a version refused ({reason})")
            info = await r.stub.GetModelInfo(recommender_pb2.GetModelInfoRequest(), timeout=5)
            assert info.model_version == first  # still serving the version it had

        # A file replaced in the artifact store behind MLflow's back: a valid model, but not
        # the one whose hash the trainer recorded.
        second = register(uri, model_name, small_artifact(seed=2), tmp_path)
        small_artifact(seed=3).save(_stored_file(registry_server, second))
        trainer.set_champion(second.version)
        await refused("checksum")

        # Registered with its hash, but its indices point past the catalogue.
        broken = tmp_path / "broken" / "model.npz"
        broken.parent.mkdir()
        small_artifact(seed=4).save(broken)
        with np.load(broken) as npz:
            arrays = dict(npz)
        arrays["seen_indices"] = arrays["seen_indices"] + 10_000
        np.savez(broken.with_suffix(""), **arrays)  # numpy adds .npz
        third = _register_file(uri, model_name, broken)
        assert third.artifact_sha256 == sha256_of(broken)
        trainer.set_champion(third.version)
        await refused("invalid")


@pytest.mark.usefixtures("as_trainer")
def test_a_promotion_records_who_asked_for_it(
        registry_server: MlflowServer, pki: Pki, kafka: TansuBroker, model_name: str,
        tmp_path: Path) -> None:
    uri = registry_server.tracking_uri
    first = publish(uri, model_name, small_artifact(seed=1), tmp_path)
    second = register(uri, model_name, small_artifact(seed=2), tmp_path).version
    user, password = registry_server.credentials(TRAINER)
    settings = TrainerSettings(
        kafka_bootstrap=kafka.bootstrap, kafka_topic="registry-security",
        mlflow_tracking_uri=uri, model_name=model_name, mlflow_username=user,
        mlflow_password=password, data_dir=str(tmp_path / "trainer"),
        tls_cert_file=str(pki.server_cert), tls_key_file=str(pki.server_key),
        tls_ca_file=str(pki.ca_cert))
    with serving([("trainer", TrainerApp(settings, CollectorRegistry()), settings)]) as servers:
        target = f"127.0.0.1:{servers['trainer'].port}"
        with secure_channel(target, client_tls(pki, cert=pki)) as channel:  # recsys-admin
            reply = trainer_pb2_grpc.TrainerServiceStub(channel).PromoteModelVersion(
                trainer_pb2.PromoteModelVersionRequest(version=second), timeout=30)
            assert (reply.model_version.version, reply.previous_version) == (second, first)
            with pytest.raises(grpc.RpcError) as raised:  # ASCII digits only
                trainer_pb2_grpc.TrainerServiceStub(channel).PromoteModelVersion(
                    trainer_pb2.PromoteModelVersionRequest(version="٣"), timeout=30)
            assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    tags = requests.get(f"{uri}/api/2.0/mlflow/model-versions/get",
                        params={"name": model_name, "version": second},
                        auth=registry_server.credentials(RECOMMENDER), timeout=10).json()
    recorded = {tag["key"]: tag["value"] for tag in tags["model_version"]["tags"]}
    assert recorded[PROMOTED_BY_TAG] == "recsys-admin"
    assert len(recorded[ARTIFACT_SHA256_TAG]) == 64
