"""Scale on one machine: synthetic MovieLens-20M-shaped data from ingest to the served champion.

For each size of `--sizes` (default 1M, 5M, 20M interactions over 138,000 users and 27,000
items, the generator's power-law popularity and taste clusters), on fresh components (Tansu
memory://, MLflow, Redis) and the services as deployed (`python -m services.<name>`):

1. ingest: the events, generated and serialised first, sent through one StreamInteractions
   call, 1,000 events per message (ingest events/s: from the first message to the answer,
   every event acknowledged by the broker);
2. append: the trainer starts after ingest, so its consumer drains the whole topic into the
   dataset at its own pace (events/s from the first stored event to the last, from its
   metrics; lag at the end);
3. a training job with fixed hyper-parameters (`search.trials=0`) through TrainerService,
   followed by WatchTrainingJob: snapshot seconds, training seconds (per epoch), evaluation,
   registration (top lists, the artifact, its upload, the version), whole job; then, for the
   sizes of `--search-sizes`, a second job with the default search budget; trainer peak RSS
   (VmHWM, consumption included), artifact size;
4. `python -m services.recommender` started on the champion: seconds to SERVING (process
   start, download, load, the catalogue topic read to its end) and peak RSS at the end of
   the load;
5. Recommend at concurrency 8 next to an echo server (scripts/bench/serve.py's), rounds
   interleaved, medians: known users' hits and misses (as serve.py's), the same with a
   category filter (the recommender follows a catalogue topic that puts every 20th item in
   serve.py's FILTER_CATEGORY), and users the model does not know with a history in Redis
   (fold-in, each request a new key).

Each size's column is printed when it ends (a run cut short keeps it); then the table of all.
Per-interaction growth lines compare each cost per interaction at the largest size with the
smallest (1.00: linear). Targets at 20M (issue 17): append >= 50,000 events/s, snapshot <= 60 s,
fixed-hyper-parameter job <= 180 s, trainer RSS <= 6 GiB, recommender load <= 60 s and RSS
<= 4 GiB; at 27,000 items, miss >= 0.45x and hit >= 0.6x echo's QPS, p99 <= 3x echo's; every
per-interaction cost grows at most 1.5x.

    .venv/bin/python scripts/bench/scale.py [--sizes 1M,5M,20M] [--search-sizes 1M]
        [--duration 4] [--rounds 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np

# Run as a file (`python scripts/bench/scale.py`): make the repository's `scripts` importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from recsys.ingest.v1 import ingest_pb2
from recsys.trainer.v1 import trainer_pb2, trainer_pb2_grpc
from scripts.bench.serve import (
    Echo,
    Figures,
    GrpcServer,
    Recommender,
    load,
    median,
    metric_families,
    publish_catalogue,
)
from scripts.localstack.components import MlflowServer, RedisServer, TansuBroker
from services.core.names import SERVICE_NAMES
from services.data.synthetic import SyntheticData, SyntheticSpec
from services.recommender.history import HistoryWriter

ROOT = Path(__file__).resolve().parents[2]
USERS, ITEMS = 138_000, 27_000
TOPIC = "interactions"
CATALOG_TOPIC = "bench-catalog"  # the recommender's only: the trainer follows its own
MODEL = "bench-scale"
CHUNK = 1_000
CONCURRENCY = 8
NEWCOMERS = 500
LOAD_USERS = 500
MODES = ("echo", "hit", "miss", "hit-filtered", "miss-filtered", "fold-in")
GIB = 1 << 30


class Ingest(GrpcServer):
    name = "ingest"
    service = SERVICE_NAMES["ingest"]

    def __init__(self, data_dir: Path, *, bootstrap: str) -> None:
        super().__init__(data_dir)
        self._bootstrap = bootstrap

    def command(self) -> list[str]:
        return [sys.executable, "-m", "services.ingest"]

    def env(self) -> dict[str, str]:
        return {**self._env(), "RECSYS_KAFKA_BOOTSTRAP": self._bootstrap,
                "RECSYS_KAFKA_TOPIC": TOPIC}


class Trainer(GrpcServer):
    name = "trainer"
    service = SERVICE_NAMES["trainer"]

    def __init__(self, data_dir: Path, *, bootstrap: str, mlflow: str) -> None:
        super().__init__(data_dir)
        self._settings = {
            "RECSYS_KAFKA_BOOTSTRAP": bootstrap, "RECSYS_KAFKA_TOPIC": TOPIC,
            "RECSYS_MLFLOW_TRACKING_URI": mlflow, "RECSYS_MODEL_NAME": MODEL,
            "RECSYS_TRAINER_DATA_DIR": str(data_dir / "dataset"),
            # The bench measures cost: every version becomes the champion it then serves.
            "RECSYS_TRAINER_MIN_NDCG": "0", "RECSYS_TRAINER_GATE_TOLERANCE": "1",
        }

    def command(self) -> list[str]:
        return [sys.executable, "-m", "services.trainer"]

    def env(self) -> dict[str, str]:
        return {**self._env(), **self._settings}


@dataclass(frozen=True)
class Job:
    seconds: float  # started to finished, evaluation and logging included
    snapshot_s: float
    search_s: float
    training_s: float
    epochs: int
    evaluation_s: float
    logging_s: float  # after the evaluation: top lists, the artifact, its upload, the version
    ndcg: float


@dataclass
class Step:
    """Every figure of one size."""

    events: int
    generate_s: float = 0.0
    ingest_eps: float = 0.0
    append_eps: float = 0.0
    lag: float = 0.0
    fixed: Job | None = None
    searched: Job | None = None
    trainer_rss_gib: float = 0.0
    artifact_mib: float = 0.0
    load_s: float = 0.0
    recommender_rss_gib: float = 0.0
    load: dict[str, Figures] = dataclasses.field(default_factory=dict)

    def ratio(self, mode: str, figure: str = "qps") -> float:
        echo = self.load["echo"]
        if figure == "qps":
            return self.load[mode].qps / echo.qps
        return self.load[mode].p99_ms / echo.p99_ms


def parse_size(text: str) -> int:
    scale = {"K": 1_000, "M": 1_000_000}.get(text[-1].upper(), 1)
    return int(float(text[:-1] if scale > 1 else text) * scale)


def peak_rss_gib(pid: int | None) -> float:
    """A process's peak resident set (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024 / GIB
    raise RuntimeError(f"no VmHWM for process {pid}")


def metric(server: GrpcServer, name: str) -> float:
    """The sum of a metric's samples (every label set)."""
    return sum(sample.value for family in metric_families(server)
               for sample in family.samples if sample.name == name)


# -- the steps -----------------------------------------------------------------------------


def generate(events: int) -> list[bytes]:
    """StreamInteractions messages of CHUNK events, serialised (events held as bytes only)."""
    spec = SyntheticSpec(users=USERS, items=ITEMS, events=events)
    messages = []
    request = ingest_pb2.StreamInteractionsRequest()
    for event in SyntheticData(spec).events():
        request.interactions.append(event)
        if len(request.interactions) == CHUNK:
            messages.append(request.SerializeToString())
            request = ingest_pb2.StreamInteractionsRequest()
    if request.interactions:
        messages.append(request.SerializeToString())
    return messages


def ingest(target: str, messages: Sequence[bytes], events: int) -> float:
    """Events per second through one StreamInteractions call, every event acknowledged."""
    with grpc.insecure_channel(target) as channel:
        call: grpc.StreamUnaryMultiCallable = channel.stream_unary(
            f"/{SERVICE_NAMES['ingest']}/StreamInteractions", request_serializer=None,
            response_deserializer=ingest_pb2.StreamInteractionsResponse.FromString)
        started = time.perf_counter()
        reply = call(iter(messages), timeout=3600)
        seconds = time.perf_counter() - started
    if reply.accepted_count != events:
        raise RuntimeError(f"ingest accepted {reply.accepted_count} of {events} events")
    return events / seconds


def drain(trainer: Trainer, events: int) -> tuple[float, float]:
    """(events/s, lag) of the trainer's consumer draining the topic into its dataset."""
    name = "recsys_trainer_events_consumed_total"
    first: tuple[float, float] | None = None
    while (consumed := metric(trainer, name)) < events:
        if first is None and consumed > 0:
            first = (time.perf_counter(), consumed)
        time.sleep(0.2)
    if first is None:  # consumed between two polls: too small a size to time
        raise RuntimeError("the topic was drained before the first poll; use a larger size")
    eps = (consumed - first[1]) / (time.perf_counter() - first[0])
    return eps, metric(trainer, "recsys_trainer_consumer_lag")


def train(trainer: Trainer, *, search: bool) -> Job:
    """A job through TrainerService, timed phase by phase from WatchTrainingJob."""
    request = trainer_pb2.StartTrainingJobRequest()
    if not search:
        request.search.trials = 0
    phases: dict[int, float] = {}
    with grpc.insecure_channel(trainer.target) as channel:
        stub = trainer_pb2_grpc.TrainerServiceStub(channel)
        job = stub.StartTrainingJob(request, timeout=30).job
        for update in stub.WatchTrainingJob(
                trainer_pb2.WatchTrainingJobRequest(job_id=job.job_id), timeout=7200):
            job = update.job
            phases.setdefault(job.phase, time.perf_counter())
    if job.state != trainer_pb2.JOB_STATE_SUCCEEDED:
        raise RuntimeError(f"job {job.job_id} ended {trainer_pb2.JobState.Name(job.state)}: "
                           f"{job.error}")

    def lasted(phase: int, until: int) -> float:
        return phases.get(until, 0.0) - phases[phase] if phase in phases else 0.0

    return Job(
        seconds=(job.finished_at.ToDatetime() - job.started_at.ToDatetime()).total_seconds(),
        snapshot_s=lasted(trainer_pb2.JOB_PHASE_SNAPSHOT, trainer_pb2.JOB_PHASE_SEARCHING
                          if search else trainer_pb2.JOB_PHASE_TRAINING),
        search_s=lasted(trainer_pb2.JOB_PHASE_SEARCHING, trainer_pb2.JOB_PHASE_TRAINING),
        training_s=lasted(trainer_pb2.JOB_PHASE_TRAINING, trainer_pb2.JOB_PHASE_EVALUATING),
        epochs=job.epochs,
        evaluation_s=lasted(trainer_pb2.JOB_PHASE_EVALUATING, trainer_pb2.JOB_PHASE_LOGGING),
        logging_s=lasted(trainer_pb2.JOB_PHASE_LOGGING, trainer_pb2.JOB_PHASE_DONE),
        ndcg=job.metrics.ndcg_at_10,
    )


def newest_artifact(mlflow: MlflowServer) -> Path:
    return max(mlflow.data_dir.rglob("model.npz"), key=lambda path: path.stat().st_mtime)


def write_histories(redis_url: str, users: Sequence[str], items: Sequence[str]) -> None:
    """Ten recent items per newcomer, as the history consumer writes them."""
    rng = np.random.default_rng(5)
    writer = HistoryWriter.connect(redis_url, history_size=50, ttl_s=86_400)
    try:
        writer.record([(user, items[i]) for user in users
                       for i in rng.integers(0, len(items), 10)])
    finally:
        writer.close()


def serve_load(step: Step, workdir: Path, recommender: Recommender, echo: Echo, *,
               known: Sequence[str], newcomers: Sequence[str], items: Sequence[str],
               duration: float, rounds: int) -> None:
    """Recommend at CONCURRENCY: echo, known users' hits and misses (unfiltered and with
    the category filter), newcomers' fold-ins."""
    files = {}
    for name, users in (("known", known), ("newcomers", newcomers)):
        files[name] = workdir / f"{name}.json"
        files[name].write_text(json.dumps({"users": list(users), "items": list(items)}))
    plan = {"echo": (echo, "hit", "known"), "hit": (recommender, "hit", "known"),
            "miss": (recommender, "miss", "known"),
            "hit-filtered": (recommender, "hit-filtered", "known"),
            "miss-filtered": (recommender, "miss-filtered", "known"),
            "fold-in": (recommender, "miss", "newcomers")}
    runs: dict[str, list[Figures]] = {mode: [] for mode in MODES}
    for _ in range(rounds):  # interleaved, so a change in the machine's load hits every mode
        for mode, (server, client_mode, users) in plan.items():
            runs[mode].append(load(server.target, client_mode, files[users],
                                   concurrency=CONCURRENCY, seconds=duration, warmup=1.0))
    step.load = {mode: median(figures) for mode, figures in runs.items()}


def run_step(events: int, *, search: bool, duration: float, rounds: int) -> Step:
    step = Step(events)
    print(f"\n== {events:,} interactions ({USERS:,} users, {ITEMS:,} items); "
          f"load {os.getloadavg()[0]:.2f}", flush=True)
    started = time.perf_counter()
    messages = generate(events)
    step.generate_s = time.perf_counter() - started
    print(f"generated in {step.generate_s:.0f} s", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        workdir = Path(tmp)
        with (TansuBroker(workdir / "tansu") as broker,
              MlflowServer(workdir / "mlflow") as mlflow,
              RedisServer(workdir / "redis") as redis):
            with Ingest(workdir / "ingest", bootstrap=broker.bootstrap) as ingest_server:
                step.ingest_eps = ingest(ingest_server.target, messages, events)
            del messages
            print(f"ingest {step.ingest_eps:,.0f} events/s", flush=True)
            with Trainer(workdir / "trainer", bootstrap=broker.bootstrap,
                         mlflow=mlflow.tracking_uri) as trainer:
                step.append_eps, step.lag = drain(trainer, events)
                print(f"append {step.append_eps:,.0f} events/s, lag {step.lag:.0f}", flush=True)
                step.fixed = train(trainer, search=False)
                print(f"fixed job {step.fixed}", flush=True)
                step.trainer_rss_gib = peak_rss_gib(trainer.pid)
                step.artifact_mib = newest_artifact(mlflow).stat().st_size / (1 << 20)
                known = [f"u{n}" for n in range(LOAD_USERS)]
                newcomers = [f"newcomer-{n}" for n in range(NEWCOMERS)]
                items = [f"i{n}" for n in range(ITEMS)]
                write_histories(redis.url, newcomers, items)
                publish_catalogue(broker.bootstrap, CATALOG_TOPIC, items)
                started = time.perf_counter()
                with Recommender(workdir / "recommender", mlflow=mlflow.tracking_uri,
                                 redis=redis.url, model=MODEL, local_cache=True,
                                 catalog=(broker.bootstrap, CATALOG_TOPIC)) as recommender:
                    step.load_s = time.perf_counter() - started
                    step.recommender_rss_gib = peak_rss_gib(recommender.pid)
                    print(f"recommender loaded in {step.load_s:.1f} s, "
                          f"{step.recommender_rss_gib:.2f} GiB", flush=True)
                    with Echo(workdir / "echo") as echo:
                        serve_load(step, workdir, recommender, echo, known=known,
                                   newcomers=newcomers, items=items, duration=duration,
                                   rounds=rounds)
                if search:
                    step.searched = train(trainer, search=True)
                    print(f"searched job {step.searched}", flush=True)
    return step


# -- the report ----------------------------------------------------------------------------


def costs(step: Step) -> dict[str, float]:
    """Each cost that should grow with the interactions, in seconds or GiB."""
    assert step.fixed is not None
    return {
        "ingest (s)": step.events / step.ingest_eps,
        "append (s)": step.events / step.append_eps,
        "snapshot (s)": step.fixed.snapshot_s,
        "training (s)": step.fixed.training_s,
        "evaluation (s)": step.fixed.evaluation_s,
        "registration (s)": step.fixed.logging_s,
        "fixed job (s)": step.fixed.seconds,
        "trainer RSS (GiB)": step.trainer_rss_gib,
        "artifact (MiB)": step.artifact_mib,
        "recommender load (s)": step.load_s,
        "recommender RSS (GiB)": step.recommender_rss_gib,
    }


def table(steps: list[Step]) -> None:
    """Every figure of `steps`, a column each."""
    header = f"{'':<26}" + "".join(f"{step.events:>14,}" for step in steps)
    print(header)

    def row(label: str, values: Sequence[str]) -> None:
        print(f"{label:<26}" + "".join(f"{value:>14}" for value in values))

    row("ingest events/s", [f"{s.ingest_eps:,.0f}" for s in steps])
    row("append events/s", [f"{s.append_eps:,.0f}" for s in steps])
    row("lag at the end", [f"{s.lag:.0f}" for s in steps])
    for label, field in (("snapshot s", "snapshot_s"), ("training s", "training_s"),
                         ("evaluation s", "evaluation_s"), ("registration s", "logging_s"),
                         ("fixed job s", "seconds")):
        row(label, [f"{getattr(s.fixed, field):.1f}" for s in steps])
    row("per epoch s", [f"{s.fixed.training_s / max(s.fixed.epochs, 1):.2f}"
                        for s in steps if s.fixed])
    row("held-out NDCG@10", [f"{s.fixed.ndcg:.4f}" for s in steps if s.fixed])
    row("searched job s", [f"{s.searched.seconds:.0f}" if s.searched else "-" for s in steps])
    row("trainer peak RSS GiB", [f"{s.trainer_rss_gib:.2f}" for s in steps])
    row("artifact MiB", [f"{s.artifact_mib:.0f}" for s in steps])
    row("recommender load s", [f"{s.load_s:.1f}" for s in steps])
    row("recommender RSS GiB", [f"{s.recommender_rss_gib:.2f}" for s in steps])
    for mode in MODES:
        row(f"{mode} QPS (x echo)", [f"{s.load[mode].qps:,.0f} ({s.ratio(mode):.2f})"
                                     for s in steps])
        row(f"{mode} p50/p99 ms", [f"{s.load[mode].p50_ms:.1f}/{s.load[mode].p99_ms:.1f}"
                                   for s in steps])


def report(steps: list[Step], command: str, duration: float, rounds: int) -> None:
    print(f"\nmachine: {platform.platform()}, {os.cpu_count()} CPUs; load average at the end "
          f"{os.getloadavg()[0]:.2f} (the machine is shared); serving figures are medians of "
          f"{rounds} runs of {duration:.0f} s at concurrency {CONCURRENCY}")
    print(f"command: {command}\n")
    table(steps)
    first, last = steps[0], steps[-1]
    if len(steps) > 1:
        growth = last.events / first.events
        print(f"\ngrowth per interaction, {first.events:,} -> {last.events:,} "
              f"(x{growth:g} interactions; 1.00 is linear, target <= 1.5):")
        before, after = costs(first), costs(last)
        for name in before:
            per = (after[name] / last.events) / (before[name] / first.events)
            print(f"  {name:<24} {before[name]:>9.2f} -> {after[name]:>9.2f}   "
                  f"x{after[name] / before[name]:.2f} total, x{per:.2f} per interaction")
    assert last.fixed is not None
    result = {
        "events": last.events, "ingest_eps": f"{last.ingest_eps:.0f}",
        "append_eps": f"{last.append_eps:.0f}", "snapshot_s": f"{last.fixed.snapshot_s:.1f}",
        "train_s": f"{last.fixed.seconds:.1f}", "trainer_rss_gib": f"{last.trainer_rss_gib:.2f}",
        "load_s": f"{last.load_s:.1f}", "recommender_rss_gib": f"{last.recommender_rss_gib:.2f}",
        "miss_qps_ratio": f"{last.ratio('miss'):.2f}", "hit_qps_ratio": f"{last.ratio('hit'):.2f}",
        "hit_filtered_qps_ratio": f"{last.ratio('hit-filtered'):.2f}",
        "miss_filtered_qps_ratio": f"{last.ratio('miss-filtered'):.2f}",
        "fold_in_qps_ratio": f"{last.ratio('fold-in'):.2f}",
        "miss_p99_ratio": f"{last.ratio('miss', 'p99'):.2f}",
        "hit_p99_ratio": f"{last.ratio('hit', 'p99'):.2f}",
    }
    print("RESULT " + " ".join(f"{key}={value}" for key, value in result.items()))


def sizes(text: str) -> Iterator[int]:
    for part in text.split(","):
        if part.strip():
            yield parse_size(part.strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1M,5M,20M",
                        help="interactions per step, comma-separated (K and M suffixes)")
    parser.add_argument("--search-sizes", default="1M",
                        help="the steps that also run a job with the default search budget "
                             "(up to 15 minutes each); empty: none")
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per load run")
    parser.add_argument("--rounds", type=int, default=3, help="load runs per figure (median)")
    args = parser.parse_args()
    searched = set(sizes(args.search_sizes))
    steps: list[Step] = []
    for events in sorted(sizes(args.sizes)):
        steps.append(run_step(events, search=events in searched, duration=args.duration,
                              rounds=args.rounds))
        print(f"load average {os.getloadavg()[0]:.2f}", flush=True)
        table(steps[-1:])  # now: a run cut short keeps the sizes it finished
    report(steps, " ".join([Path(sys.executable).name, *sys.argv]), args.duration, args.rounds)


if __name__ == "__main__":
    main()
