"""The edge under test: the real Envoy in front of the three real services, and a trained model.

Envoy runs as the local stack and Kubernetes run it: TLS on the listener (a PKI generated for
the package), bearer tokens checked against its JWKS, scopes and rate limits per route. The
REST client and the gRPC channel through Envoy trust that CA and carry a token with every
scope; tests of the refusals themselves are in tests/integration/security.

The services run in this process, on one event loop in a background thread, so the tests stay
plain synchronous code with blocking HTTP and gRPC clients. The package's fixture ingests a
small data set through Envoy's REST API, trains on it through REST, watches the job over gRPC
through Envoy, and waits until the recommender serves the new champion: the main job, end to
end through the edge, before the first test.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from prometheus_client import CollectorRegistry

from scripts.localstack.components import HOST, MlflowServer, RedisServer, TansuBroker
from scripts.localstack.envoy import Envoy
from scripts.localstack.pki import Pki, ensure_pki
from services.core.server import App
from services.edge.profiles import pki_security
from services.edge.tokens import SCOPES
from services.ingest.app import IngestApp
from services.ingest.settings import IngestSettings
from services.recommender.app import RecommenderApp
from services.recommender.settings import RecommenderSettings
from services.trainer.app import TrainerApp
from services.trainer.settings import TrainerSettings
from tests.support.clients import Rest, Stubs, envoy_channel
from tests.support.edge import MODEL, TOPIC, Edge, train_through_the_edge
from tests.support.loop_thread import serving
from tests.support.polling import eventually


@pytest.fixture(scope="package")
def edge_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return ensure_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="package")
def edge(kafka: TansuBroker, mlflow_server: MlflowServer, redis_server: RedisServer,
         edge_pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    ingest = IngestSettings(kafka_bootstrap=kafka.bootstrap, kafka_topic=TOPIC)
    trainer = TrainerSettings(
        kafka_bootstrap=kafka.bootstrap, kafka_topic=TOPIC, consumer_group="edge-trainer",
        mlflow_tracking_uri=mlflow_server.tracking_uri, model_name=MODEL,
        mlflow_experiment="edge", data_dir=str(tmp_path_factory.mktemp("trainer")),
        min_ndcg=0.0)
    recommender = RecommenderSettings(
        kafka_bootstrap=kafka.bootstrap, kafka_topic=TOPIC,
        mlflow_tracking_uri=mlflow_server.tracking_uri, model_name=MODEL,
        redis_url=redis_server.url, poll_interval_s=0.5)
    trainer_app = TrainerApp(trainer, CollectorRegistry())
    apps: list[tuple[str, App, Any]] = [
        ("ingest", IngestApp(ingest, CollectorRegistry()), ingest),
        ("trainer", trainer_app, trainer),
        ("recommender", RecommenderApp(recommender, CollectorRegistry()), recommender),
    ]
    with serving(apps) as servers, contextlib.ExitStack() as stack:
        ports = {name: running_server.port for name, running_server in servers.items()}
        envoy = stack.enter_context(Envoy(
            tmp_path_factory.mktemp("envoy"), ingest=f"{HOST}:{ports['ingest']}",
            trainer=f"{HOST}:{ports['trainer']}",
            recommender=f"{HOST}:{ports['recommender']}",
            security=pki_security(edge_pki.directory)))
        token = edge_pki.mint_token(SCOPES, subject="edge-tests")
        via_envoy = Stubs.of(dict.fromkeys(
            ports, stack.enter_context(envoy_channel(envoy, edge_pki, token))))
        direct = Stubs.of({name: stack.enter_context(grpc.insecure_channel(f"{HOST}:{port}"))
                           for name, port in ports.items()})
        rest = Rest(envoy.port, ca=edge_pki.ca_cert, token=token)
        job = train_through_the_edge(rest, via_envoy, trainer_app)
        eventually(lambda: (reply := rest.get("/v1/model")).status == 200
                   and reply.body["modelVersion"] == job.model_version,
                   timeout=60, what="the recommender serving the new champion")
        yield Edge(envoy, rest, via_envoy, direct, ports, job, edge_pki, token)


@pytest.fixture(scope="package")
def rest(edge: Edge) -> Rest:
    return edge.rest
