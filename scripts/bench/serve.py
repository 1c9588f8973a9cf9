"""Recommend throughput: cache hit and cache miss against an echo server, at concurrency 8 and 64.

Starts Redis and MLflow, registers a champion per catalogue and, for each catalogue, starts
`python -m services.recommender` twice (with the in-process answer tier, and with Redis as the
only tier) next to an echo server built with the same runtime (services.core: interceptors,
health, reflection) whose RecommenderService returns a fixed 10-item answer. Catalogues:

- ml100k: MovieLens-100k trained with the model core (943 users, 1,682 items, default
  hyper-parameters), or random factors of that shape when the data is not there;
- synthetic-100k: trained with the model core (default hyper-parameters) on 2,000,000 events
  from the synthetic generator (services.data.synthetic: 20,000 users, 100,000 items, Zipf
  exponent 0.8), about 98,900 of the items seen, so in the model;
- random-100k: random factors, 20,000 users, 100,000 items, 128 factors: no structure for the
  item index to use (it is calibrated, found useless, and scoring stays exact): the worst case.

Before the load, each catalogue's line says how the recommender scores it (exact, or the item
index with its calibrated recall@10 and the share of the catalogue a query scans, from the
server's metrics) and how personal the answers are (distinct items in the exact top-10s of
the load users: all users getting the same 10 items makes any index's work easy).

Each run is a grpc.aio load client in its own process (one channel, `concurrency` requests in
flight) after a warm-up, on the same machine as the servers; the modes take turns for
`--rounds` rounds and each figure is the median of its runs:

- echo: the runtime's floor;
- hit: 500 known users, k=10, cycled; after the warm-up every answer is cached, and with the
  in-process tier on it answers from process memory;
- hit-redis: the same with RECSYS_RECOMMENDER_LOCAL_CACHE_SIZE=0, so every hit is one Redis
  round trip (the path another replica's cached answer takes);
- miss: as hit, but each request excludes a different random item, so its cache key is new.
  A known user's answer comes from their top list, the user's recent history from the
  in-process tier once held (the first request of each user asks Redis), and nothing is
  written to Redis; a catalogue without top lists looks Redis up, scores, and writes back;
- hit-filtered, miss-filtered: hit and miss with a category filter (Recommend's
  `categories`), the category holding 5% of the catalogue (every 20th item). The recommenders
  follow a catalogue topic on a Tansu broker that puts every item in a category.

After the load, the hide latency: 20 times, a user's cached top item is hidden (its catalogue
record produced with acks=all) and the answer polled until the item has left it; p50 and p99
from the acknowledgement to the first answer without it (like freshness.py's measure).

Targets (ratios to echo at concurrency 8): on ml-100k and every catalogue here, miss QPS >=
0.8, hit QPS >= 0.85, p99 of both <= 2x echo's p99 (issue 17; before it: 0.45, 0.60, 3x);
filtered >= 0.8x the unfiltered QPS (hit and miss, issue 16); hide within 1 s.

    .venv/bin/python scripts/bench/serve.py [--duration 4] [--warmup 1] [--rounds 3]
        [--ml100k PATH] [--catalogues ml100k,synthetic-100k,random-100k]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

# Run as a file (`python scripts/bench/serve.py`): make the repository's `scripts` importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from recsys.recommender.v1 import recommender_pb2, recommender_pb2_grpc
from scripts.localstack.components import (
    HOST,
    Component,
    MlflowServer,
    RedisServer,
    TansuBroker,
    free_port,
    free_ports,
)
from services.core.names import SERVICE_NAMES

ROOT = Path(__file__).resolve().parents[2]
SERVICE = SERVICE_NAMES["recommender"]
CONCURRENCIES = (8, 64)
LOAD_USERS = 500
TARGETS = {"hit_qps": 0.85, "miss_qps": 0.80, "p99": 2.0, "filtered": 0.8}
FILTER_CATEGORY = "five-percent"  # every 20th item; the others are in "rest"
HIDES = 20


@dataclass(frozen=True)
class Figures:
    requests: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def qps(self) -> float:
        return self.requests / self.seconds


# -- servers -------------------------------------------------------------------------------


class GrpcServer(Component):
    """A gRPC server process on a free port, ready when its health says `service` is SERVING."""

    service = SERVICE

    def __init__(self, data_dir: Path) -> None:
        super().__init__(data_dir)
        self.port, self.metrics_port = free_ports(2)

    @property
    def target(self) -> str:
        return f"{HOST}:{self.port}"

    def probe(self) -> bool:
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        with grpc.insecure_channel(self.target) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=self.service), timeout=1)
        return reply.status == health_pb2.HealthCheckResponse.SERVING

    def _env(self) -> dict[str, str]:
        return {"RECSYS_GRPC_PORT": str(self.port), "RECSYS_METRICS_PORT": str(self.metrics_port),
                "RECSYS_LOG_LEVEL": "WARNING", "RECSYS_LOG_FORMAT": "json"}


class Recommender(GrpcServer):
    """`python -m services.recommender`, as deployed, with its settings in env()."""

    name = "recommender"

    def __init__(self, data_dir: Path, *, mlflow: str, redis: str, model: str,
                 local_cache: bool, catalog: tuple[str, str] | None = None) -> None:
        """`catalog`: the broker and the catalogue topic to follow; without, no broker."""
        super().__init__(data_dir)
        self._settings = {
            "RECSYS_MLFLOW_TRACKING_URI": mlflow, "RECSYS_REDIS_URL": redis,
            "RECSYS_MODEL_NAME": model,
            # Answers use the model, the cache and the catalogue, not recent history.
            "RECSYS_KAFKA_BOOTSTRAP": catalog[0] if catalog else f"{HOST}:{free_port()}",
            "RECSYS_RECOMMENDER_HISTORY_CONSUMER": "false",
            "RECSYS_RECOMMENDER_CATALOG_CONSUMER": "true" if catalog else "false",
            "RECSYS_RECOMMENDER_LOCAL_CACHE_SIZE": "10000" if local_cache else "0",
        }
        if catalog:
            self._settings["RECSYS_KAFKA_CATALOG_TOPIC"] = catalog[1]

    def command(self) -> list[str]:
        return [sys.executable, "-m", "services.recommender"]

    def wait_ready(self, timeout: float = 120.0) -> Recommender:
        """Loading a 100,000-item version ranks its top lists and index first (~20 s)."""
        return super().wait_ready(timeout)

    def env(self) -> dict[str, str]:
        return {**self._env(), **self._settings}


class Echo(GrpcServer):
    """`serve.py echo-server`: the same runtime answering a fixed response."""

    name = "echo"

    def command(self) -> list[str]:
        return [sys.executable, __file__, "echo-server"]

    def env(self) -> dict[str, str]:
        return self._env()


def echo_server() -> None:
    """A RecommenderService built with services.core that returns a fixed 10-item answer."""
    from services.core.config import ServerSettings
    from services.core.health import HealthReporter
    from services.core.main import run
    from services.core.server import ServiceBinding

    answer = recommender_pb2.RecommendResponse(
        items=[recommender_pb2.ScoredItem(item_id=f"i{n}", score=1.0 / (n + 1))
               for n in range(10)],
        model_version="1", strategy=recommender_pb2.STRATEGY_PERSONALIZED)

    class EchoServicer(recommender_pb2_grpc.RecommenderServiceServicer):  # Recommend only
        async def Recommend(self, request: recommender_pb2.RecommendRequest,
                            context: grpc.aio.ServicerContext) -> recommender_pb2.RecommendResponse:
            return answer

    class EchoApp:
        bindings = (ServiceBinding(SERVICE, lambda server: recommender_pb2_grpc
                                   .add_RecommenderServiceServicer_to_server(
                                       EchoServicer(), server)),)  # type: ignore[abstract]

        async def start(self, health: HealthReporter) -> None:
            await health.set_serving(SERVICE, True)

        async def drain(self) -> None:
            pass

        async def close(self) -> None:
            pass

    run(ServerSettings, "RECSYS_ECHO_", lambda settings, registry: EchoApp())


# -- catalogues ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Catalogue:
    name: str
    description: str
    users: list[str]
    items: list[str]


def ml100k_artifact(path: Path | None) -> tuple[object, str]:
    """MovieLens-100k trained with the model core, or random factors of its shape."""
    from services.trainer.model import Interactions, TrainConfig, fit
    from services.trainer.packaging import package_model

    if path is not None and (path / "u.data").is_file():
        raw = np.loadtxt(path / "u.data", dtype=np.int64, usecols=(0, 1))
        user_ids, users = np.unique(raw[:, 0], return_inverse=True)
        item_ids, items = np.unique(raw[:, 1], return_inverse=True)
        data = Interactions.from_arrays(users, items)
        started = time.perf_counter()
        model = fit(data, TrainConfig())
        print(f"  trained on {path} in {time.perf_counter() - started:.1f} s", flush=True)
        artifact = package_model(model, data, user_ids=[str(u) for u in user_ids],
                                 item_ids=[str(i) for i in item_ids])
        return artifact, f"MovieLens-100k, trained ({artifact.factors} factors)"
    return random_artifact(943, 1682, 128, seen_per_user=100), \
        "random factors of MovieLens-100k shape (data not found)"


def synthetic_artifact() -> tuple[object, str]:
    """The model core trained on the synthetic generator's events (about 40 s here)."""
    from services.data.synthetic import SyntheticData, SyntheticSpec
    from services.trainer.model import Interactions, TrainConfig, fit
    from services.trainer.packaging import package_model

    spec = SyntheticSpec(users=20_000, items=100_000, events=2_000_000, popularity_exponent=0.8)
    started = time.perf_counter()
    blocks = list(SyntheticData(spec).blocks())
    user_ids, users = np.unique(np.concatenate([b.user for b in blocks]), return_inverse=True)
    item_ids, items = np.unique(np.concatenate([b.item for b in blocks]), return_inverse=True)
    data = Interactions.from_arrays(users, items)
    model = fit(data, TrainConfig())
    print(f"  generated and trained in {time.perf_counter() - started:.0f} s", flush=True)
    artifact = package_model(model, data, user_ids=[f"u{u}" for u in user_ids],
                             item_ids=[f"i{i}" for i in item_ids])
    return artifact, (f"synthetic events, trained: {artifact.n_users:,} users, "
                      f"{artifact.n_items:,} items, {artifact.factors} factors")


def random_artifact(n_users: int, n_items: int, factors: int, *, seen_per_user: int) -> object:
    from services.model.artifact import ModelArtifact

    rng = np.random.default_rng(42)
    items = rng.normal(scale=0.1, size=(n_items, factors))
    seen = np.sort(rng.integers(0, n_items, size=(n_users, seen_per_user)), axis=1)
    return ModelArtifact.from_factors(rng.normal(scale=0.1, size=(n_users, factors)), items,
                                      seen)


def register(tracking_uri: str, model: str, artifact: object, workdir: Path) -> None:
    """Register `artifact` as the champion of `model`, as the trainer does."""
    from services.model.artifact import ModelArtifact
    from services.model.lineage import Lineage
    from services.trainer.registry import MlflowRegistry, configure_mlflow_client

    assert isinstance(artifact, ModelArtifact)
    path = workdir / model / "model.npz"
    path.parent.mkdir(parents=True)
    artifact.save(path)
    lineage = Lineage(topic="bench", row_count=len(artifact.seen_indices), content_hash="0" * 64,
                      partition_offsets={0: len(artifact.seen_indices)},
                      user_count=artifact.n_users, item_count=artifact.n_items)
    configure_mlflow_client(timeout_s=10, retries=2)  # bounded retries, telemetry off
    registry = MlflowRegistry(tracking_uri=tracking_uri, model_name=model, experiment="bench")
    run_id = registry.start_run(job_id=model, params={}, lineage=lineage, tags={})
    version = registry.register(run_id, metrics={}, lineage=lineage, artifact=path,
                                hyperparameters={}, tags={})
    registry.end_run(run_id, "FINISHED")
    registry.set_champion(version.version)


CATALOGUES = ("ml100k", "synthetic-100k", "random-100k")


def catalogues(tracking_uri: str, workdir: Path, ml100k: Path | None,
               names: Sequence[str] = CATALOGUES) -> list[Catalogue]:
    out = []
    print("building and registering the catalogues ...", flush=True)
    built = []
    if "ml100k" in names:
        built.append(("ml100k", *ml100k_artifact(ml100k)))
    if "synthetic-100k" in names:
        built.append(("synthetic-100k", *synthetic_artifact()))
    if "random-100k" in names:
        built.append(("random-100k", random_artifact(20_000, 100_000, 128, seen_per_user=20),
                      "random factors: 20,000 users, 100,000 items, 128 factors"))
    for name, artifact, description in built:
        register(tracking_uri, f"bench-{name}", artifact, workdir)
        users = artifact.user_ids.tolist()[:LOAD_USERS]  # type: ignore[attr-defined]
        personal = (f"{distinct_top10(artifact, users):,} distinct items in the exact top-10s "
                    f"of the {len(users)} load users")
        out.append(Catalogue(name, f"{description}; {personal}", users,
                             artifact.item_ids.tolist()))  # type: ignore[attr-defined]
    return out


def publish_catalogue(bootstrap: str, topic: str, items: Sequence[str]) -> None:
    """Every item in the catalogue topic: every 20th in FILTER_CATEGORY, the others in "rest"."""
    from recsys.events.v1.catalog_pb2 import CatalogChange, Item

    changes = [CatalogChange(item=Item(
        item_id=item, hidden=False, categories=[FILTER_CATEGORY if n % 20 == 0 else "rest"]))
        for n, item in enumerate(items)]
    _produce(bootstrap, topic, changes)


def _produce(bootstrap: str, topic: str, changes: Sequence[object]) -> None:
    """The catalogue changes on `topic`, keyed as CatalogService keys them, acknowledged."""
    from kafka import KafkaProducer

    from services.core.catalog import record_key
    from services.core.kafka import producer_config

    producer = KafkaProducer(**producer_config(bootstrap, client_id="bench-catalog"))
    try:
        for change in changes:
            producer.send(topic, key=record_key(change),  # type: ignore[arg-type]
                          value=change.SerializeToString())  # type: ignore[attr-defined]
        producer.flush(60)
    finally:
        producer.close()


def hide_latency(target: str, bootstrap: str, topic: str, users: Sequence[str]
                 ) -> list[float]:
    """Seconds from a hide's acknowledgement to the first answer without the item, HIDES
    times: each time a user's cached top item is hidden, then shown again."""
    from recsys.events.v1.catalog_pb2 import CatalogChange, Item

    seconds = []
    with grpc.insecure_channel(target) as channel:
        stub = recommender_pb2_grpc.RecommenderServiceStub(channel)

        def top(user: str) -> list[str]:
            reply = stub.Recommend(recommender_pb2.RecommendRequest(user_id=user, k=10),
                                   timeout=10)
            return [item.item_id for item in reply.items]

        for user in users[:HIDES]:
            item = top(user)[0]
            top(user)  # cached now
            change = CatalogChange(item=Item(item_id=item, hidden=True, categories=["rest"]))
            _produce(bootstrap, topic, [change])
            acked = time.perf_counter()
            while item in top(user):
                time.sleep(0.002)
            seconds.append(time.perf_counter() - acked)
            change.item.hidden = False
            _produce(bootstrap, topic, [change])
            while item not in top(user):
                time.sleep(0.002)
    return seconds


def distinct_top10(artifact: object, users: Sequence[str]) -> int:
    from services.model.artifact import ModelArtifact
    from services.recommender.scoring import Query, Scorer

    assert isinstance(artifact, ModelArtifact)
    answers = Scorer(artifact).recommend_many([Query(user, 10) for user in users])
    return len({item for _, ranked in answers for item, _ in ranked})


# -- load ----------------------------------------------------------------------------------


def metric_families(server: GrpcServer) -> list[Metric]:
    body = urllib.request.urlopen(f"http://{HOST}:{server.metrics_port}/metrics", timeout=5)
    return list(text_string_to_metric_families(body.read().decode()))


def scoring(server: GrpcServer) -> str:
    """How the recommender scores its catalogue, from its index gauges."""
    gauges = {family.name: family.samples[0].value for family in metric_families(server)
              if family.name.startswith(("recsys_recommender_index_",
                                         "recsys_recommender_top_lists"))}
    recall, scanned = (gauges["recsys_recommender_index_recall"],
                       gauges["recsys_recommender_index_scanned_ratio"])
    lists = "top lists for known users; otherwise " if gauges[
        "recsys_recommender_top_lists"] else ""
    if scanned >= 1:
        return f"{lists}exact (every item scored)"
    return (f"{lists}item index, recall@10 {recall:.3f} at calibration, {scanned:.1%} of items "
            f"scanned")


def cache_outcomes(server: GrpcServer) -> Counter[str]:
    """recsys_recommender_cache_requests_total by "result/tier", scraped from /metrics."""
    counts: Counter[str] = Counter()
    for family in metric_families(server):
        if family.name == "recsys_recommender_cache_requests":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    counts[f"{sample.labels['result']}/{sample.labels['tier']}"] += int(
                        sample.value)
    return counts


def describe(outcomes: Counter[str]) -> str:
    """The share of each cache outcome, e.g. "hit/local 97%, miss/redis 3%"."""
    total = sum(outcomes.values()) or 1
    return ", ".join(f"{k} {v / total:.0%}" for k, v in outcomes.most_common())


def median(runs: list[Figures]) -> Figures:
    """Each statistic's median over the rounds (errors: their sum)."""
    return Figures(
        requests=int(np.median([r.requests for r in runs])),
        errors=sum(r.errors for r in runs), seconds=runs[0].seconds,
        p50_ms=float(np.median([r.p50_ms for r in runs])),
        p99_ms=float(np.median([r.p99_ms for r in runs])),
    )


def load(target: str, mode: str, catalogue_file: Path, *, concurrency: int, seconds: float,
         warmup: float) -> Figures:
    """The load client in its own process, so it does not share the servers' GIL."""
    out = subprocess.run(
        [sys.executable, __file__, "load-client", "--target", target, "--mode", mode,
         "--catalogue", str(catalogue_file), "--concurrency", str(concurrency),
         "--duration", str(seconds), "--warmup", str(warmup)],
        capture_output=True, text=True, check=True, timeout=seconds + warmup + 120,
    ).stdout
    return Figures(**json.loads(out.splitlines()[-1]))


async def _load_client(target: str, mode: str, users: Sequence[str], items: Sequence[str], *,
                       concurrency: int, seconds: float, warmup: float) -> Figures:
    latencies: list[float] = []
    errors = 0
    rng = random.Random(7)
    async with grpc.aio.insecure_channel(target) as channel:
        stub = recommender_pb2_grpc.RecommenderServiceStub(channel)
        categories = [FILTER_CATEGORY] if mode.endswith("-filtered") else []
        mode = mode.removesuffix("-filtered")
        if mode == "hit":  # every user's answer cached before the clock starts
            for n in range(0, len(users), concurrency):
                await asyncio.gather(*(
                    stub.Recommend(recommender_pb2.RecommendRequest(
                        user_id=user, k=10, categories=categories), timeout=30)
                    for user in users[n : n + concurrency]))
        loop = asyncio.get_running_loop()
        start = loop.time() + warmup
        end = start + seconds

        async def worker(offset: int) -> None:
            nonlocal errors
            n = offset
            while (now := loop.time()) < end:
                request = recommender_pb2.RecommendRequest(user_id=users[n % len(users)], k=10,
                                                           categories=categories)
                if mode == "miss":
                    request.exclude_item_ids.append(rng.choice(items))
                n += concurrency
                try:
                    await stub.Recommend(request, timeout=10)
                except grpc.aio.AioRpcError:
                    errors += now >= start
                    continue
                if now >= start:
                    latencies.append(loop.time() - now)

        await asyncio.gather(*(worker(i) for i in range(concurrency)))
    p50, p99 = np.percentile(latencies, [50, 99]) * 1000 if latencies else (0.0, 0.0)
    return Figures(len(latencies), errors, seconds, float(p50), float(p99))


# -- the run -------------------------------------------------------------------------------

MODES = ("echo", "hit", "hit-redis", "miss", "hit-filtered", "miss-filtered")
# What the load client does in each mode.
CLIENT_MODES = {"echo": "hit", "hit": "hit", "hit-redis": "hit", "miss": "miss",
                "hit-filtered": "hit-filtered", "miss-filtered": "miss-filtered"}


def bench(duration: float, warmup: float, rounds: int, ml100k: Path | None,
          names: Sequence[str]) -> None:
    command = " ".join([Path(sys.executable).name, *sys.argv])
    rows: dict[tuple[str, str, int], Figures] = {}
    hides: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        workdir = Path(tmp)
        with (RedisServer(workdir / "redis") as redis,
              MlflowServer(workdir / "mlflow") as mlflow,
              TansuBroker(workdir / "tansu") as kafka,
              Echo(workdir / "echo") as echo):
            for catalogue in catalogues(mlflow.tracking_uri, workdir, ml100k, names):
                print(f"\n{catalogue.name}: {catalogue.description}", flush=True)
                catalogue_file = workdir / f"{catalogue.name}.json"
                catalogue_file.write_text(json.dumps(dataclasses.asdict(catalogue)))
                topic = f"catalog-{catalogue.name}"
                publish_catalogue(kafka.bootstrap, topic, catalogue.items)
                common: dict[str, Any] = {
                    "mlflow": mlflow.tracking_uri, "redis": redis.url,
                    "model": f"bench-{catalogue.name}", "catalog": (kafka.bootstrap, topic)}
                with (Recommender(workdir / f"rec-{catalogue.name}", local_cache=True,
                                  **common) as tiered,
                      Recommender(workdir / f"rec-{catalogue.name}-redis", local_cache=False,
                                  **common) as redis_only):
                    servers = {"echo": echo, "hit": tiered, "hit-redis": redis_only,
                               "miss": tiered, "hit-filtered": tiered, "miss-filtered": tiered}
                    print(f"scoring: {scoring(tiered)}", flush=True)
                    print(f"{'mode':<10} {'conc':>5} {'qps':>8} {'range':>11} {'p50 ms':>8} "
                          f"{'p99 ms':>8} {'errors':>7}  cache outcomes (server's metrics)",
                          flush=True)
                    for c in CONCURRENCIES:
                        runs: dict[str, list[Figures]] = {mode: [] for mode in MODES}
                        outcomes: dict[str, Counter[str]] = {mode: Counter() for mode in MODES}
                        # Rounds interleave the modes, so a change in the machine's load
                        # (it is shared) touches each mode alike; each figure is a median.
                        for _ in range(rounds):
                            for mode in MODES:
                                server = servers[mode]
                                before = cache_outcomes(server)
                                runs[mode].append(load(
                                    server.target, CLIENT_MODES[mode],
                                    catalogue_file, concurrency=c, seconds=duration,
                                    warmup=warmup))
                                outcomes[mode] += cache_outcomes(server) - before
                        for mode in MODES:
                            f = rows[catalogue.name, mode, c] = median(runs[mode])
                            qps = sorted(run.qps for run in runs[mode])
                            print(f"{mode:<10} {c:>5} {f.qps:>8.0f} {qps[0]:>5.0f}-{qps[-1]:<5.0f} "
                                  f"{f.p50_ms:>8.2f} {f.p99_ms:>8.2f} {f.errors:>7}  "
                                  f"{describe(outcomes[mode])}", flush=True)
                    hides[catalogue.name] = hide_latency(tiered.target, kafka.bootstrap, topic,
                                                         catalogue.users)
                    p50, p99 = np.percentile(hides[catalogue.name], [50, 99]) * 1000
                    print(f"hide latency ({HIDES} hides, ack to the first answer without the "
                          f"item): p50 {p50:.0f} ms, p99 {p99:.0f} ms", flush=True)
    report(rows, hides, command, duration, rounds)


def report(rows: dict[tuple[str, str, int], Figures], hides: dict[str, list[float]],
           command: str, duration: float, rounds: int) -> None:
    import torch

    print(f"\nmachine: {platform.platform()}, {os.cpu_count()} CPUs "
          f"({platform.processor() or platform.machine()}), torch {torch.__version__}; "
          f"load clients share the machine with the servers; figures are medians of "
          f"{rounds} runs of {duration:.0f} s")
    print(f"command: {command}")
    result: dict[str, str] = {}
    for name in dict.fromkeys(key[0] for key in rows):
        for c in CONCURRENCIES:
            echo = rows[name, "echo", c]
            for mode in MODES[1:]:
                f = rows[name, mode, c]
                prefix = f"{name.replace('-', '_')}_c{c}_{mode.replace('-', '_')}"
                result[f"{prefix}_qps"] = f"{f.qps:.0f}"
                result[f"{prefix}_qps_ratio"] = f"{f.qps / echo.qps:.2f}"
                result[f"{prefix}_p99_ratio"] = f"{f.p99_ms / echo.p99_ms:.2f}"
            result[f"{name.replace('-', '_')}_c{c}_echo_qps"] = f"{echo.qps:.0f}"
        echo, hit, miss = (rows[name, mode, 8] for mode in ("echo", "hit", "miss"))
        met = (hit.qps >= TARGETS["hit_qps"] * echo.qps
               and miss.qps >= TARGETS["miss_qps"] * echo.qps
               and max(hit.p99_ms, miss.p99_ms) <= TARGETS["p99"] * echo.p99_ms)
        print(f"{name} at concurrency 8: hit {hit.qps / echo.qps:.2f}x echo QPS "
              f"(target {TARGETS['hit_qps']}), miss {miss.qps / echo.qps:.2f}x "
              f"(target {TARGETS['miss_qps']}), p99 hit {hit.p99_ms / echo.p99_ms:.2f}x / "
              f"miss {miss.p99_ms / echo.p99_ms:.2f}x echo (target <= {TARGETS['p99']}): "
              f"{'met' if met else 'NOT met'}")
        result[f"{name.replace('-', '_')}_targets_met"] = str(met).lower()
        ratios = {mode: rows[name, f"{mode}-filtered", 8].qps / rows[name, mode, 8].qps
                  for mode in ("hit", "miss")}
        p50, p99 = np.percentile(hides[name], [50, 99]) * 1000
        filtered_met = min(ratios.values()) >= TARGETS["filtered"] and p99 < 1000
        print(f"{name} at concurrency 8, a category of 5% of the catalogue: filtered hit "
              f"{ratios['hit']:.2f}x unfiltered QPS, filtered miss {ratios['miss']:.2f}x "
              f"(target {TARGETS['filtered']}); hide p50 {p50:.0f} ms, p99 {p99:.0f} ms "
              f"(target < 1 s): {'met' if filtered_met else 'NOT met'}")
        key = name.replace("-", "_")
        result[f"{key}_c8_filtered_hit_ratio"] = f"{ratios['hit']:.2f}"
        result[f"{key}_c8_filtered_miss_ratio"] = f"{ratios['miss']:.2f}"
        result[f"{key}_hide_p50_ms"] = f"{p50:.0f}"
        result[f"{key}_hide_p99_ms"] = f"{p99:.0f}"
        result[f"{key}_filtered_targets_met"] = str(filtered_met).lower()
    print("RESULT " + " ".join(f"{k}={v}" for k, v in result.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("echo-server", help="(internal) serve the echo RecommenderService")
    client = sub.add_parser("load-client", help="(internal) the gRPC load client")
    client.add_argument("--target", required=True)
    client.add_argument("--mode", choices=("hit", "miss", "hit-filtered", "miss-filtered"),
                        required=True)
    client.add_argument("--catalogue", type=Path, required=True)
    client.add_argument("--concurrency", type=int, required=True)
    client.add_argument("--duration", type=float, required=True)
    client.add_argument("--warmup", type=float, required=True)
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per run")
    parser.add_argument("--rounds", type=int, default=3,
                        help="runs per figure, interleaved across modes; figures are medians")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before each run")
    parser.add_argument("--ml100k", type=Path, default=ROOT.parent / "shared/datasets/ml-100k",
                        help="MovieLens-100k directory (random factors of its shape if absent)")
    parser.add_argument("--catalogues", default=",".join(CATALOGUES),
                        help=f"comma-separated, of {', '.join(CATALOGUES)}")
    args = parser.parse_args()
    if args.command == "echo-server":
        echo_server()
    elif args.command == "load-client":
        catalogue = json.loads(args.catalogue.read_text())
        figures = asyncio.run(_load_client(
            args.target, args.mode, catalogue["users"], catalogue["items"],
            concurrency=args.concurrency, seconds=args.duration, warmup=args.warmup))
        print(json.dumps(dataclasses.asdict(figures)))
    else:
        names = args.catalogues.split(",")
        if unknown := set(names) - set(CATALOGUES):
            parser.error(f"--catalogues: unknown {', '.join(sorted(unknown))}")
        bench(args.duration, args.warmup, args.rounds, args.ml100k, names)


if __name__ == "__main__":
    main()
