"""Fault injection: mixed traffic through Envoy while the local stack's parts are killed, and
what each fault costs.

Brings the local stack up as the README does (`python -m scripts.localstack.up --no-job
--replicas 2`, on free ports, in a temporary state directory) with the trainer starting a job
every TRIGGER new events, streams SEED synthetic events into it (the trigger trains the first
champion), then drives traffic through Envoy for the whole run:

- Recommend and CreateInteraction, each at a steady rate (scripts/localstack/traffic.py);
- a bulk load: StreamInteractions calls of synthetic events at a steady rate, each call
  resuming where the previous one's IngestFailure said it stopped (what `recsys ingest`'s
  users are told to do), so new events keep arriving and keep the trainer's trigger firing.

It injects these faults one after another, each followed by QUIET seconds of traffic:

    broker   kill -9 of Tansu (durable, on SeaweedFS S3), kept down OUTAGE seconds, restarted
    redis    kill -9 of Redis (supervisord restarts it)
    mlflow   kill -9 of MLflow (supervisord restarts it)
    trainer  kill -9 of the trainer (supervisord restarts it)
    replica  kill -9 of the second recommender replica (supervisord restarts it)
    rolling  a rolling restart: each ingest and recommender replica in turn gets SIGTERM,
             drains, exits, starts again and is waited for (ready, and healthy to Envoy)

For each fault, over its window (injection to the end of its quiet time): calls made and
failed, by method and status; events acknowledged, and how many of them the trainer's dataset
holds once it has caught up (lost: acknowledged, not there); and the seconds until the part
served again (recover_s: from the kill, or for the broker from its restart, to ready; for the
rolling restart the slowest replica's SIGTERM to ready). The broker's line also gives the time
from its kill to ingest's NOT_SERVING and the slowest failed ingest answer; the rolling line
the slowest drain (SIGTERM to exit). Duplicates are rows of the dataset beyond one per
event id.

Targets (issue 14): no acknowledged event lost, no duplicate in the dataset, no failed
Recommend during the Redis, MLflow and trainer faults and the rolling restart, and failures
during the broker outage only on ingest, as UNAVAILABLE naming the unpublished events (or
DEADLINE_EXCEEDED naming them, for a call that was waiting for the broker when it died and
whose deadline came first; the table counts each status).

    .venv/bin/python scripts/bench/chaos.py [--quiet 10] [--outage 10]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import itertools
import json
import os
import platform
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter, deque
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

# Run as a file (`python scripts/bench/chaos.py`): make the repository's `scripts` importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from recsys.events.v1 import interaction_pb2
from recsys.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from scripts.localstack.readiness import healthy_in_envoy, serving, stack_client_tls
from scripts.localstack.supervisor import Supervisor
from scripts.localstack.traffic import Call, Report, Traffic, detail_types
from services.cli.ingest import ingest_failure, stream_events
from services.cli.token import mint_token
from services.core.names import SERVICE_NAMES
from services.core.tls import ClientTLS
from services.data.synthetic import SyntheticData, SyntheticSpec

ROOT = Path(__file__).resolve().parents[2]
SEED = SyntheticSpec(users=2000, items=1000, events=50_000, seed=7)
LOAD = SyntheticSpec(users=2000, items=1000, events=10_000_000, seed=8)
TRIGGER = 5000  # new events per training job
RECOMMEND_PER_S, INTERACTIONS_PER_S = 30.0, 10.0
STREAM_PER_S, STREAM_CHUNK, STREAM_CALL = 150.0, 50, 1500
INGEST_FAILURE = ingest_pb2.IngestFailure.DESCRIPTOR.full_name
INGEST_METHODS = ("CreateInteraction", "StreamInteractions")
# How ingest fails while the broker is down: UNAVAILABLE; or, for a call already waiting for
# the broker's ack when it died, DEADLINE_EXCEEDED if the client's deadline comes before the
# ack timeout (through Envoy it always does: the route caps deadlines at the ack timeout's
# 10 s). Both carry the IngestFailure that names the unpublished events.
BROKER_DOWN = ("UNAVAILABLE", "DEADLINE_EXCEEDED")
REPLICA_COUNT = 2  # of ingest and of the recommender
REPLICAS = ("ingest", "ingest-2", "recommender", "recommender-2")


def wait_for(check: Callable[[], bool], timeout: float, what: str,
             interval: float = 0.1) -> float:
    """Poll `check` until it holds; the seconds that took."""
    started = time.monotonic()
    while True:
        try:
            if check():
                return time.monotonic() - started
        except Exception:  # not up yet
            pass
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"{what}: not within {timeout:.0f} s")
        time.sleep(interval)


# -- the stack ---------------------------------------------------------------------------------


@dataclass
class Stack:
    state: Path
    endpoints: dict[str, str]
    security: dict[str, Any]
    process: subprocess.Popen[bytes]

    @property
    def control(self) -> Supervisor:
        return Supervisor(self.state)

    @property
    def tls(self) -> ClientTLS | None:
        """The admin's certificate, for the services' own (mutual TLS) health checks."""
        return stack_client_tls(self.security)

    def serving(self, program: str) -> bool:
        """The replica says SERVING."""
        service = program.split("-", maxsplit=1)[0]
        target = self.endpoints[f"{program.replace('-', '_')}_grpc"]
        return serving(target, SERVICE_NAMES[service], tls=self.tls)

    def serves(self, program: str) -> bool:
        """The replica says SERVING and Envoy finds every replica of its service healthy."""
        service = program.split("-", maxsplit=1)[0]
        return self.serving(program) and healthy_in_envoy(
            self.endpoints["envoy_admin"], service, REPLICA_COUNT)

    def dataset(self) -> tuple[set[str], int]:
        """The event ids in the trainer's dataset, and its rows beyond one per id."""
        with closing(sqlite3.connect(self.state / "trainer" / "trainer.sqlite3")) as db:
            ids = {row[0] for row in db.execute("SELECT event_id FROM events")}
            rows = db.execute("SELECT count(*) FROM events").fetchone()[0]
        return ids, rows - len(ids)


def start_stack(state: Path) -> Stack:
    log = state / "up.log"
    environ = {**os.environ, "RECSYS_TRAINER_TRIGGER_NEW_EVENTS": str(TRIGGER)}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "scripts.localstack.up", "--no-job", "--free-ports",
             "--replicas", str(REPLICA_COUNT), "--state-dir", str(state)],
            cwd=ROOT, env=environ, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def up() -> bool:
        if process.poll() is not None:
            raise SystemExit(f"the local stack exited:\n{log.read_text()[-3000:]}")
        return "serving until Ctrl-C" in log.read_text()

    wait_for(up, 600, "the local stack serving")
    return Stack(state, json.loads((state / "endpoints.json").read_text()),
                 json.loads((state / "security.json").read_text()), process)


def stop_stack(stack: Stack) -> None:
    stack.process.send_signal(signal.SIGTERM)
    try:
        stack.process.wait(180)
    except subprocess.TimeoutExpired:
        os.killpg(stack.process.pid, signal.SIGKILL)
        stack.process.wait()


# -- the bulk load -----------------------------------------------------------------------------


class BulkLoad(threading.Thread):
    """StreamInteractions calls through Envoy, STREAM_CALL events each, paced; after a failed
    call the next one first resends what the IngestFailure says was not taken in or not
    published (without one, the whole call: the dataset keeps one row per event id)."""

    def __init__(self, channel: grpc.Channel, report: Report) -> None:
        super().__init__(name="bulk-load", daemon=True)
        self._stub = ingest_pb2_grpc.IngestServiceStub(channel)
        self._report = report
        self._events: Iterator[interaction_pb2.Interaction] = SyntheticData(LOAD).events()
        self._backlog: deque[interaction_pb2.Interaction] = deque()
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            batch = [self._backlog.popleft() for _ in range(min(len(self._backlog),
                                                                  STREAM_CALL))]
            batch += itertools.islice(self._events, STREAM_CALL - len(batch))
            self._call(batch)

    def _requests(self, batch: list[interaction_pb2.Interaction]
                  ) -> Iterator[ingest_pb2.StreamInteractionsRequest]:
        for start in range(0, len(batch), STREAM_CHUNK):
            if self.stopping.is_set():
                return
            yield ingest_pb2.StreamInteractionsRequest(
                interactions=batch[start:start + STREAM_CHUNK])
            time.sleep(STREAM_CHUNK / STREAM_PER_S)

    def _call(self, batch: list[interaction_pb2.Interaction]) -> None:
        started = time.monotonic()
        try:
            reply = self._stub.StreamInteractions(self._requests(batch), timeout=120)
        except grpc.RpcError as error:
            ended = time.monotonic()
            failure = ingest_failure(error)
            call = Call(ended, ended - started, "StreamInteractions", error.code().name,
                        detail_types(error))
            if failure is None:
                self._report.add(call)
                self._backlog.extend(batch)
                return
            missing = set(failure.not_accepted_indexes)
            taken = failure.accepted_count + len(missing)
            self._report.add(call, *(batch[i].event_id for i in range(taken)
                                     if i not in missing))
            self._backlog.extend([batch[i] for i in sorted(missing)] + batch[taken:])
            return
        ended = time.monotonic()
        sent = batch[:reply.accepted_count]  # all of it, unless the load was stopping
        self._report.add(Call(ended, ended - started, "StreamInteractions", "OK"),
                         *(event.event_id for event in sent))


# -- the faults --------------------------------------------------------------------------------


@dataclass
class Fault:
    name: str
    description: str
    started: float = 0.0
    ended: float = 0.0
    recover_s: float = 0.0
    notes: dict[str, float] = field(default_factory=dict)


def broker(stack: Stack, outage_s: float, fault: Fault) -> None:
    control = stack.control
    control.kill("tansu")
    killed = time.monotonic()
    control.stop("tansu")  # kept down: the restart supervisord began is stopped
    wait_for(lambda: not any(stack.serving(p) for p in ("ingest", "ingest-2")), 60,
             "ingest NOT_SERVING")
    fault.notes["to_not_serving_s"] = time.monotonic() - killed
    time.sleep(max(0.0, outage_s - (time.monotonic() - killed)))
    control.start("tansu")
    fault.recover_s = wait_for(lambda: all(stack.serves(p) for p in ("ingest", "ingest-2")),
                               120, "ingest serving again")


def kill_9(program: str, ready: Callable[[Stack], bool]) -> Callable[[Stack, float, Fault],
                                                                     None]:
    """A fault: kill -9 of `program`, then supervisord restarts it; recovered once `ready`."""

    def inject(stack: Stack, _outage_s: float, fault: Fault) -> None:
        stack.control.kill(program)
        fault.recover_s = wait_for(lambda: ready(stack), 180, f"{program} back")

    return inject


def redis_ready(stack: Stack) -> bool:
    import redis

    client = redis.Redis.from_url(stack.endpoints["redis_url"], socket_timeout=1,
                                  socket_connect_timeout=1)
    try:
        return bool(client.ping())
    finally:
        client.close()


def rolling(stack: Stack, _outage_s: float, fault: Fault) -> None:
    control = stack.control
    drains: list[float] = []
    restarts: list[float] = []
    for program in REPLICAS:
        started = time.monotonic()
        control.stop(program)
        drains.append(time.monotonic() - started)
        control.start(program)
        wait_for(functools.partial(stack.serves, program), 180, f"{program} ready")
        restarts.append(time.monotonic() - started)
    fault.recover_s = max(restarts)
    fault.notes["drain_to_exit_max_s"] = max(drains)


def mlflow_ready(stack: Stack) -> bool:
    with urllib.request.urlopen(f"{stack.endpoints['mlflow_ui']}/health", timeout=2) as reply:
        return bool(reply.status == 200)


FAULTS: list[tuple[str, str, Callable[[Stack, float, Fault], None]]] = [
    ("broker", "kill -9 Tansu, down OUTAGE s, restart", broker),
    ("redis", "kill -9 Redis", kill_9("redis", redis_ready)),
    ("mlflow", "kill -9 MLflow", kill_9("mlflow", mlflow_ready)),
    ("trainer", "kill -9 the trainer", kill_9("trainer", lambda s: s.serving("trainer"))),
    ("replica", "kill -9 recommender-2", kill_9("recommender-2",
                                                lambda s: s.serves("recommender-2"))),
    ("rolling", "rolling restart of the 4 replicas", rolling),
]


# -- the run -----------------------------------------------------------------------------------


def run(quiet_s: float, outage_s: float, state: Path) -> tuple[list[Fault], Report, Stack]:
    stack = start_stack(state)
    try:
        summary = stream_events(SyntheticData(SEED).events(), target=stack.endpoints[
            "ingest_grpc"], timeout_s=600, tls=stack.tls)
        assert summary.error is None, summary.error
        wait_for(lambda: all(stack.serves(p) for p in REPLICAS), 600,
                 "a champion trained by the trigger, served by both replicas")
        token = mint_token(["ingest:write", "recommend:read"],
                           key_file=stack.security["token_signing_key"], subject="chaos")
        tls = ClientTLS(ca_file=stack.security["ca_file"], token=token)
        faults: list[Fault] = []
        with (grpc.secure_channel(stack.endpoints["envoy_grpc"], tls.credentials()) as edge,
              Traffic(edge, recommend_per_s=RECOMMEND_PER_S,
                      interactions_per_s=INTERACTIONS_PER_S, run="chaos") as traffic):
            load = BulkLoad(edge, traffic.report)
            load.start()
            time.sleep(quiet_s)  # traffic before the first fault
            for name, description, inject in FAULTS:
                fault = Fault(name, description.replace("OUTAGE", f"{outage_s:g}"),
                              started=time.monotonic())
                print(f"[chaos] {fault.description}", flush=True)
                inject(stack, outage_s, fault)
                time.sleep(quiet_s)  # traffic on the recovered stack
                fault.ended = time.monotonic()
                faults.append(fault)
            load.stopping.set()
            load.join(180)
        return faults, traffic.report, stack
    except BaseException:
        stop_stack(stack)
        raise


def report(faults: list[Fault], calls: Report, stack: Stack, command: str) -> None:
    acked = calls.acknowledged
    print("[chaos] waiting for the trainer's dataset to catch up", flush=True)
    with contextlib.suppress(TimeoutError):  # what is still missing then is lost
        wait_for(lambda: set(acked) <= stack.dataset()[0], 300, "the dataset caught up",
                 interval=2.0)
    in_dataset, duplicates = stack.dataset()
    print(f"\nmachine: {platform.platform()}, {os.cpu_count()} CPUs "
          f"({platform.processor() or platform.machine()}); the whole stack and the clients "
          "share it")
    print(f"command: {command}")
    print(f"traffic: Recommend {RECOMMEND_PER_S:g}/s, CreateInteraction "
          f"{INTERACTIONS_PER_S:g}/s, a bulk load of {STREAM_PER_S:g} events/s; a training "
          f"job every {TRIGGER} new events")
    failed_recommend, worst, targets = 0, 0.0, True
    for fault in faults:
        window = calls.between(fault.started, fault.ended)
        acks = [event_id for at, event_id in calls.acks if fault.started <= at < fault.ended]
        failed = Counter((c.method, c.code) for c in window if c.code != "OK")
        lost = [event_id for event_id in acks if event_id not in in_dataset]
        recommend = sum(n for (method, _), n in failed.items() if method == "Recommend")
        failed_recommend += recommend
        worst = max(worst, fault.recover_s)
        print(f"\n== {fault.name}: {fault.description}")
        print(f"  calls {len(window)}, failed {sum(failed.values())}"
              + "".join(f"\n    {method} {code}: {n}" for (method, code), n in
                        sorted(failed.items())))
        print(f"  events acknowledged {len(acks)}, in the dataset {len(acks) - len(lost)}, "
              f"lost {len(lost)}")
        print(f"  recover_s {fault.recover_s:.1f}"
              + "".join(f", {k} {v:.2f}" for k, v in fault.notes.items()))
        if fault.name == "broker":
            failures = [c for c in window if c.code != "OK"]
            unnamed = [c for c in failures if c.method not in INGEST_METHODS
                       or c.code not in BROKER_DOWN or INGEST_FAILURE not in c.details]
            answers = [c.seconds for c in failures if c.method == "CreateInteraction"]
            print(f"  failed ingest answers: slowest {max(answers, default=0) * 1000:.0f} ms; "
                  f"failures other than ingest's naming the unpublished events: {len(unnamed)}")
            fault.notes["failed_answer_max_s"] = max(answers, default=0.0)
            targets &= not unnamed
        elif fault.name != "replica":
            targets &= recommend == 0
        targets &= not lost
    lost_total = [event_id for event_id in acked if event_id not in in_dataset]
    targets &= not lost_total and duplicates == 0
    notes = {f"{f.name}_{k}": v for f in faults for k, v in f.notes.items()}
    print(f"\nacknowledged {len(acked)}, lost {len(lost_total)}, duplicates in the dataset "
          f"{duplicates}, failed Recommend {failed_recommend}: targets "
          f"{'met' if targets else 'NOT met'}")
    print("RESULT " + " ".join([
        f"lost_events={len(lost_total)}", f"duplicate_events={duplicates}",
        f"failed_recommend={failed_recommend}", f"recover_s={worst:.1f}",
        *(f"{f.name}_recover_s={f.recover_s:.1f}" for f in faults),
        *(f"{k}={v:.2f}" for k, v in notes.items()),
        f"acknowledged_events={len(acked)}", f"targets_met={str(targets).lower()}"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quiet", type=float, default=10.0,
                        help="seconds of traffic after each fault's recovery")
    parser.add_argument("--outage", type=float, default=10.0,
                        help="seconds the broker stays down")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-chaos-") as tmp:
        faults, calls, stack = run(args.quiet, args.outage, Path(tmp))
        try:
            report(faults, calls, stack, " ".join(sys.argv))
        finally:
            stop_stack(stack)


if __name__ == "__main__":
    main()
