"""The edge under test: the real Envoy in front of the three real services, and a trained model.

Envoy runs as the local stack and Kubernetes run it: TLS on the listener (a PKI generated for
the package), bearer tokens checked against its JWKS, scopes and rate limits per route. The
REST client and the gRPC channel through Envoy trust that CA and carry a token with every
scope; tests of the refusals themselves are in tests/integration/security.

The services run in this process, on one event loop in a background thread, so the tests stay
plain synchronous code with blocking HTTP and gRPC clients. The package's fixture ingests a
small synthetic data set through Envoy's REST API, trains on it through REST, watches the job
over gRPC through Envoy, and waits until the recommender serves the new champion: the main job,
end to end through the edge, before the first test.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import random
import ssl
import threading
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from prometheus_client import CollectorRegistry

from recsys.ingest.v1 import ingest_pb2_grpc
from recsys.recommender.v1 import recommender_pb2_grpc
from recsys.trainer.v1 import trainer_pb2, trainer_pb2_grpc
from scripts.localstack.components import HOST, MlflowServer, RedisServer, TansuBroker
from scripts.localstack.envoy import Envoy
from scripts.localstack.pki import Pki, ensure_pki
from services.core import server
from services.core.server import App, RunningServer
from services.core.tls import ClientTLS
from services.edge.profiles import pki_security
from services.edge.tokens import SCOPES
from services.ingest.app import IngestApp
from services.ingest.settings import IngestSettings
from services.recommender.app import RecommenderApp
from services.recommender.settings import RecommenderSettings
from services.trainer.app import TrainerApp
from services.trainer.settings import TrainerSettings

T = TypeVar("T")

TOPIC = "edge-interactions"
MODEL = "edge-mf"
USERS = [f"u{i:02d}" for i in range(40)]
ITEMS = [f"i{i:02d}" for i in range(30)]


class LoopThread:
    """An asyncio loop on a daemon thread: the in-process servers live there."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="edge-servers",
                                        daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def serve(self, app: App, settings: Any) -> RunningServer:
        return self.run(server.start(app, settings, CollectorRegistry()))

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


@contextlib.contextmanager
def serving(apps: list[tuple[str, App, Any]]) -> Iterator[dict[str, RunningServer]]:
    """Serve (name, app, settings) in this process, on one loop thread; stop them after."""
    loop = LoopThread()
    servers: dict[str, RunningServer] = {}
    try:
        for name, app, settings in apps:
            servers[name] = loop.serve(app, settings)
        yield servers
    finally:
        for running in servers.values():
            loop.run(running.stop(1.0))
        loop.close()


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any  # the parsed JSON
    headers: dict[str, str]


class Rest:
    """A small JSON client for Envoy's REST API (http.client: no proxy lookups).

    With `ca`, HTTPS trusting that CA; with `token`, every request carries it as a bearer token.
    """

    def __init__(self, port: int, *, ca: Path | None = None, token: str | None = None) -> None:
        self.port = port
        self.ca = ca
        self.token = token

    def with_token(self, token: str | None) -> Rest:
        """The same client with another token (None: none)."""
        return Rest(self.port, ca=self.ca, token=token)

    def connection(self) -> http.client.HTTPConnection:
        if self.ca is None:
            return http.client.HTTPConnection(HOST, self.port, timeout=30)
        context = ssl.create_default_context(cafile=str(self.ca))
        return http.client.HTTPSConnection(HOST, self.port, timeout=30, context=context)

    def request(self, method: str, path: str, body: Any = None, *, raw: bytes | None = None,
                headers: dict[str, str] | None = None) -> Reply:
        data = raw if raw is not None else None if body is None else json.dumps(body).encode()
        conn = self.connection()
        try:
            sent = {"content-type": "application/json"} if data is not None else {}
            if self.token is not None:
                sent["authorization"] = f"Bearer {self.token}"
            conn.request(method, path, body=data, headers={**sent, **(headers or {})})
            response = conn.getresponse()
            payload = response.read()
            content_type = response.getheader("content-type", "")
            assert content_type.startswith("application/json"), (response.status, payload)
            return Reply(response.status, json.loads(payload),
                         {k.lower(): v for k, v in response.getheaders()})
        finally:
            conn.close()

    def get(self, path: str, **kwargs: Any) -> Reply:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, body: Any = None, **kwargs: Any) -> Reply:
        return self.request("POST", path, {} if body is None else body, **kwargs)


@dataclass(frozen=True)
class Stubs:
    ingest: ingest_pb2_grpc.IngestServiceStub
    trainer: trainer_pb2_grpc.TrainerServiceStub
    recommender: recommender_pb2_grpc.RecommenderServiceStub

    @classmethod
    def of(cls, channels: dict[str, grpc.Channel]) -> Stubs:
        return cls(ingest_pb2_grpc.IngestServiceStub(channels["ingest"]),
                   trainer_pb2_grpc.TrainerServiceStub(channels["trainer"]),
                   recommender_pb2_grpc.RecommenderServiceStub(channels["recommender"]))


@dataclass(frozen=True)
class Edge:
    envoy: Envoy
    rest: Rest  # HTTPS with a token of every scope
    via_envoy: Stubs  # gRPC through Envoy's TLS listener, with the same token
    direct: Stubs  # gRPC straight to each service
    ports: dict[str, int]  # each service's own gRPC port
    job: trainer_pb2.TrainingJob  # the job that trained the served model
    pki: Pki
    token: str  # every scope


def envoy_channel(envoy: Envoy, pki: Pki, token: str | None) -> grpc.Channel:
    """A gRPC channel to Envoy's TLS listener, trusting the PKI's CA, sending `token`."""
    tls = ClientTLS(ca_file=str(pki.ca_cert), token=token)
    return grpc.secure_channel(envoy.target, tls.credentials())


@pytest.fixture(scope="package")
def edge_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return ensure_pki(tmp_path_factory.mktemp("pki"))


def synthetic_events() -> list[dict[str, Any]]:
    """Three taste groups of users, each mostly clicking its own third of the items, as the
    REST API takes them (lowerCamelCase JSON)."""
    rng = random.Random(42)
    start = datetime.now(UTC) - timedelta(days=1)
    events: list[dict[str, Any]] = []
    for n, user in enumerate(USERS):
        group = n % 3
        liked = ITEMS[group * 10:(group + 1) * 10]
        for item in rng.sample(liked, 7) + rng.sample(ITEMS, 2):
            at = start + timedelta(seconds=len(events))
            events.append({"userId": user, "itemId": item, "type": "INTERACTION_TYPE_CLICK",
                           "occurredAt": at.isoformat().replace("+00:00", "Z")})
    return events


def wait_for(what: str, check: Any, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)
    return result


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
        job = _train(rest, via_envoy, trainer_app)
        wait_for("the recommender to serve the new champion", lambda: (
            reply := rest.get("/v1/model")).status == 200
            and reply.body["modelVersion"] == job.model_version)
        yield Edge(envoy, rest, via_envoy, direct, ports, job, edge_pki, token)


def _train(rest: Rest, stubs: Stubs, trainer: TrainerApp) -> trainer_pb2.TrainingJob:
    """Ingest the synthetic events and train on them, all through Envoy; the finished job."""
    events = synthetic_events()
    # Ingest answers UNAVAILABLE until it has seen its broker: the first event is the probe.
    wait_for("ingest to reach Kafka", lambda: rest.post(
        "/v1/interactions:batchCreate", {"interactions": events[:1]}).status == 200)
    for start in range(1, len(events), 1000):
        reply = rest.post("/v1/interactions:batchCreate",
                          {"interactions": events[start:start + 1000], "allOrNothing": True})
        assert reply.status == 200, reply.body
    wait_for("the trainer to store every event",
             lambda: trainer.store is not None and trainer.store.row_count >= len(events))
    reply = rest.post("/v1/trainingJobs", {"hyperparameters": {"factors": 8, "epochs": 8}})
    assert reply.status == 200, reply.body
    request = trainer_pb2.WatchTrainingJobRequest(job_id=reply.body["job"]["jobId"])
    *_, last = stubs.trainer.WatchTrainingJob(request, timeout=120)
    assert last.job.state == trainer_pb2.JOB_STATE_SUCCEEDED, last.job
    assert last.job.promoted, last.job.promotion_reason
    return last.job


@pytest.fixture(scope="package")
def rest(edge: Edge) -> Rest:
    return edge.rest
