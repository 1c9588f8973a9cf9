"""Mutual TLS between services: each real server refuses every client without a certificate
from the mesh's CA, lets only the identities on its allow-lists call more than health, and
serves health in plaintext on a separate port for probes."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client import CollectorRegistry

from recsys.recommender.v1 import recommender_pb2, recommender_pb2_grpc
from recsys.trainer.v1 import trainer_pb2, trainer_pb2_grpc
from scripts.localstack.components import (
    HOST,
    VENV_BIN,
    MlflowServer,
    RedisServer,
    TansuBroker,
    free_port,
)
from scripts.localstack.pki import Pki, issue_client_certificate
from services.core.names import SERVICE_NAMES
from services.core.server import App, RunningServer
from services.core.tls import ClientTLS
from services.ingest.app import IngestApp
from services.ingest.settings import IngestSettings
from services.recommender.app import RecommenderApp
from services.recommender.settings import RecommenderSettings
from services.trainer.app import TrainerApp
from services.trainer.settings import TrainerSettings
from tests.support.grpc_calls import client_tls, health_check, refused, secure_channel
from tests.support.loop_thread import serving

pytestmark = pytest.mark.integration

@dataclass(frozen=True)
class Mesh:
    servers: dict[str, RunningServer]

    def target(self, name: str) -> str:
        return f"{HOST}:{self.servers[name].port}"


@pytest.fixture(scope="module")
def mesh(pki: Pki, kafka: TansuBroker, mlflow_server: MlflowServer, redis_server: RedisServer,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    """The three services with mutual TLS on, each with a plaintext health-only port."""

    def tls() -> dict[str, Any]:
        return {"tls_cert_file": str(pki.server_cert), "tls_key_file": str(pki.server_key),
                "tls_ca_file": str(pki.ca_cert), "health_port": free_port()}

    topic = "mtls-interactions"
    ingest = IngestSettings(kafka_bootstrap=kafka.bootstrap, kafka_topic=topic, **tls())
    trainer = TrainerSettings(
        kafka_bootstrap=kafka.bootstrap, kafka_topic=topic, consumer_group="mtls-trainer",
        mlflow_tracking_uri=mlflow_server.tracking_uri, model_name="mtls-mf",
        mlflow_experiment="mtls", data_dir=str(tmp_path_factory.mktemp("trainer")), **tls())
    recommender = RecommenderSettings(
        kafka_bootstrap=kafka.bootstrap, kafka_topic=topic, model_name="mtls-mf",
        mlflow_tracking_uri=mlflow_server.tracking_uri, redis_url=redis_server.url, **tls())
    apps: list[tuple[str, App, Any]] = [
        ("ingest", IngestApp(ingest, CollectorRegistry()), ingest),
        ("trainer", TrainerApp(trainer, CollectorRegistry()), trainer),
        ("recommender", RecommenderApp(recommender, CollectorRegistry()), recommender),
    ]
    with serving(apps) as servers:
        yield Mesh(servers)


@pytest.mark.parametrize("name", list(SERVICE_NAMES))
def test_clients_without_a_mesh_certificate_are_refused(
    mesh: Mesh, pki: Pki, foreign_pki: Pki, name: str
) -> None:
    target = mesh.target(name)
    attempts = {
        "plaintext": grpc.insecure_channel(target),
        "TLS, no client certificate": secure_channel(target, client_tls(pki)),
        "a certificate from another CA": secure_channel(target, client_tls(pki, cert=foreign_pki)),
    }
    for what, channel in attempts.items():
        with channel:
            assert refused(lambda c=channel: health_check(c)) == grpc.StatusCode.UNAVAILABLE, what


@pytest.mark.parametrize("name", list(SERVICE_NAMES))
def test_clients_with_a_mesh_certificate_are_served(mesh: Mesh, pki: Pki, name: str) -> None:
    with secure_channel(mesh.target(name), client_tls(pki, cert=pki)) as channel:
        assert health_check(channel, "liveness") == health_pb2.HealthCheckResponse.SERVING
        # Reflection too: what grpcurl needs, with -cacert, -cert and -key.
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
        listed = {s.name for reply in replies for s in reply.list_services_response.service}
        assert SERVICE_NAMES[name] in listed


@pytest.mark.parametrize("name", list(SERVICE_NAMES))
def test_probes_get_health_and_nothing_else_in_plaintext(mesh: Mesh, name: str) -> None:
    port = mesh.servers[name].health_port
    assert port is not None
    with grpc.insecure_channel(f"{HOST}:{port}") as channel:
        assert health_check(channel, "liveness") == health_pb2.HealthCheckResponse.SERVING
        assert health_check(channel, SERVICE_NAMES[name]) in (
            health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING)
        stub = recommender_pb2_grpc.RecommenderServiceStub(channel)
        assert refused(lambda: stub.GetModelInfo(
            recommender_pb2.GetModelInfoRequest(), timeout=3)) == grpc.StatusCode.UNIMPLEMENTED
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        assert refused(lambda: list(reflection.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=3)),
        ) == grpc.StatusCode.UNIMPLEMENTED


def _recsys(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "services.cli", *args], capture_output=True,
                          text=True, timeout=60, check=False, env={**os.environ, **env})


def test_cli_uses_the_client_certificate_from_its_variables(mesh: Mesh, pki: Pki) -> None:
    target = mesh.target("recommender")
    # No champion in this registry: the recommender answers, with FAILED_PRECONDITION.
    served = _recsys("model-info", "--target", target, env=pki.client_env())
    assert "FAILED_PRECONDITION" in served.stderr, served.stderr
    refused_ = _recsys("model-info", "--target", target, env={})
    assert refused_.returncode == 1
    assert "UNAVAILABLE" in refused_.stderr, refused_.stderr


def test_grpcurl_with_the_client_certificate(mesh: Mesh, pki: Pki) -> None:
    def grpcurl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(VENV_BIN / "grpcurl"), *args, mesh.target("trainer"), "list"],
                              capture_output=True, text=True, timeout=30, check=False)

    listed = grpcurl(*pki.grpcurl_args())
    assert listed.returncode == 0, listed.stderr
    assert SERVICE_NAMES["trainer"] in listed.stdout.split()
    assert grpcurl(*pki.grpcurl_args(client_cert=False)).returncode != 0
    assert grpcurl("-plaintext").returncode != 0


@pytest.fixture(scope="module")
def recommender_identity(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> ClientTLS:
    """A certificate from the mesh's CA for the recommender: a workload that calls nothing."""
    folder = tmp_path_factory.mktemp("recommender-identity")
    cert, key = folder / "client.crt", folder / "client.key"
    issue_client_certificate(pki, "recommender", cert, key)
    return ClientTLS(ca_file=str(pki.ca_cert), cert_file=str(cert), key_file=str(key))


def _promote(channel: grpc.Channel) -> Any:
    stub = trainer_pb2_grpc.TrainerServiceStub(channel)
    return stub.PromoteModelVersion(trainer_pb2.PromoteModelVersionRequest(version="999"),
                                    timeout=10)


def test_a_certificate_of_the_ca_is_not_enough_to_call_a_service(
    mesh: Mesh, recommender_identity: ClientTLS,
) -> None:
    """Signed by the mesh's CA, but not on the allow-lists: health only."""
    for name in SERVICE_NAMES:
        with secure_channel(mesh.target(name), recommender_identity) as channel:
            assert health_check(channel, "liveness") == health_pb2.HealthCheckResponse.SERVING
            stub = recommender_pb2_grpc.RecommenderServiceStub(channel)
            assert refused(lambda s=stub: s.GetModelInfo(recommender_pb2.GetModelInfoRequest(),
                                                         timeout=5)) in (
                grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNIMPLEMENTED), name
    with secure_channel(mesh.target("trainer"), recommender_identity) as channel:
        assert refused(lambda: _promote(channel)) == grpc.StatusCode.PERMISSION_DENIED
    with secure_channel(mesh.target("recommender"), recommender_identity) as channel:
        stub = recommender_pb2_grpc.RecommenderServiceStub(channel)
        assert refused(lambda: stub.GetModelInfo(recommender_pb2.GetModelInfoRequest(),
                                                 timeout=5)) == grpc.StatusCode.PERMISSION_DENIED


def test_the_admin_identity_may_call_admin_rpcs(mesh: Mesh, pki: Pki) -> None:
    with secure_channel(mesh.target("trainer"), client_tls(pki, cert=pki)) as channel:
        # Past the allow-list, to the registry, which has no such version.
        assert refused(lambda: _promote(channel)) == grpc.StatusCode.NOT_FOUND


def test_a_servers_certificate_cannot_act_as_a_client(mesh: Mesh, pki: Pki) -> None:
    """The local servers share a certificate that also names "envoy": as a client certificate
    (serverAuth only) it is refused during the handshake, so it never passes for Envoy."""
    as_client = ClientTLS(ca_file=str(pki.ca_cert), cert_file=str(pki.server_cert),
                          key_file=str(pki.server_key))
    with secure_channel(mesh.target("trainer"), as_client) as channel:
        assert refused(lambda: _promote(channel)) == grpc.StatusCode.UNAVAILABLE
