"""Ingest throughput: unary batches and the stream through IngestService, beside a raw producer.

Starts a Tansu broker (memory://) and `python -m services.ingest` in its own process, then, for
each of `--rounds` rounds, sends the same `--events` synthetic events three ways:

- raw: a kafka-python KafkaProducer with the mesh's producer settings (acks=all, idempotent,
  services.core.kafka.producer_config), values already serialized, flushed at the end: the
  ceiling, a client with no validation, no gRPC and no per-request acknowledgement;
- batch: BatchCreateInteractions, 1,000 events per request, `--concurrency` requests in flight;
- stream: one StreamInteractions call, 1,000 events per message (what `recsys ingest` does).

The service's figures count from the first request to the last answer, so every event was
acknowledged by the broker. Each mode's figure is the median over the rounds; rounds
interleave the modes so that a noisy neighbour hits them alike.
Target: stream >= 0.5 x raw.

    .venv/bin/python scripts/bench/ingest.py [--events 100000] [--rounds 3] [--concurrency 4]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

# Run as a file (`python scripts/bench/ingest.py`): make the repository importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

from recsys.events.v1 import interaction_pb2
from recsys.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from scripts.localstack.components import HOST, TansuBroker, free_ports
from services.core.client import aio_channel
from services.core.kafka import producer_config
from services.core.names import SERVICE_NAMES
from services.data.synthetic import SyntheticData, SyntheticSpec

ROOT = Path(__file__).resolve().parents[2]
SERVICE = SERVICE_NAMES["ingest"]
TOPIC = "bench-interactions"
RAW_TOPIC = "bench-raw"
PARTITIONS = 3
CHUNK = 1000
TARGET_RATIO = 0.5


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text()
                .splitlines() if line.startswith("model name")), platform.processor())
    return f"{platform.node()}: {cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def make_events(count: int) -> list[interaction_pb2.Interaction]:
    spec = SyntheticSpec(users=10_000, items=5_000, events=count, seed=1)
    return list(SyntheticData(spec).events())


def start_server(bootstrap: str, extra_env: dict[str, str]) -> tuple[subprocess.Popen[bytes], int]:
    grpc_port, metrics_port = free_ports(2)
    env = {**os.environ, "RECSYS_KAFKA_BOOTSTRAP": bootstrap, "RECSYS_KAFKA_TOPIC": TOPIC,
           "RECSYS_INGEST_TOPIC_PARTITIONS": str(PARTITIONS), "RECSYS_GRPC_HOST": HOST,
           "RECSYS_GRPC_PORT": str(grpc_port), "RECSYS_METRICS_PORT": str(metrics_port),
           "RECSYS_LOG_LEVEL": "WARNING", **extra_env}
    process = subprocess.Popen([sys.executable, "-m", "services.ingest"], cwd=ROOT, env=env)
    return process, grpc_port


async def wait_serving(channel: grpc.aio.Channel, within_s: float = 30.0) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + within_s
    while True:
        try:
            answer = await stub.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=2)
            if answer.status == health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.aio.AioRpcError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError("ingest server not SERVING")
        await asyncio.sleep(0.2)


def run_raw(bootstrap: str, records: list[tuple[bytes, bytes]]) -> float:
    """Seconds for a tuned producer to send `records` and have all of them acknowledged."""
    producer = KafkaProducer(**producer_config(bootstrap, client_id="bench-raw"))
    try:
        producer.send(RAW_TOPIC, key=b"warm-up", value=b"x").get(timeout=10)
        started = time.perf_counter()
        for key, value in records:
            producer.send(RAW_TOPIC, key=key, value=value)
        producer.flush()
        return time.perf_counter() - started
    finally:
        producer.close()


async def run_batches(stub: ingest_pb2_grpc.IngestServiceAsyncStub,
                      requests: list[ingest_pb2.BatchCreateInteractionsRequest],
                      concurrency: int) -> float:
    queue = iter(requests)

    async def worker() -> None:
        for request in queue:
            answer = await stub.BatchCreateInteractions(request, timeout=60)
            assert answer.accepted_count == len(request.interactions), answer.rejections[:1]

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started


async def run_stream(stub: ingest_pb2_grpc.IngestServiceAsyncStub,
                     requests: list[ingest_pb2.StreamInteractionsRequest]) -> float:
    started = time.perf_counter()
    answer = await stub.StreamInteractions(iter(requests), timeout=600)
    seconds = time.perf_counter() - started
    expected = sum(len(r.interactions) for r in requests)
    assert answer.accepted_count == expected, (answer.accepted_count, answer.rejections[:1])
    return seconds


async def bench(args: argparse.Namespace, bootstrap: str) -> dict[str, list[float]]:
    events = make_events(args.events)
    chunks = [events[i:i + CHUNK] for i in range(0, len(events), CHUNK)]
    batch_requests = [ingest_pb2.BatchCreateInteractionsRequest(interactions=c) for c in chunks]
    stream_requests = [ingest_pb2.StreamInteractionsRequest(interactions=c) for c in chunks]
    raw_records = [(e.user_id.encode(), e.SerializeToString()) for e in events]
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(RAW_TOPIC, PARTITIONS, 1)])
    admin.close()

    extra_env = dict(item.split("=", 1) for item in args.server_env)
    server, port = start_server(bootstrap, extra_env)
    seconds: dict[str, list[float]] = {"raw": [], "batch": [], "stream": []}
    try:
        async with aio_channel(f"{HOST}:{port}") as channel:
            await wait_serving(channel)
            stub = ingest_pb2_grpc.IngestServiceStub(channel)
            await run_batches(stub, batch_requests[:2], 1)  # warm-up: connections, metadata
            for round_ in range(args.rounds):
                seconds["raw"].append(await asyncio.to_thread(run_raw, bootstrap, raw_records))
                seconds["batch"].append(
                    await run_batches(stub, batch_requests, args.concurrency))
                seconds["stream"].append(await run_stream(stub, stream_requests))
                print(f"round {round_ + 1}: " + ", ".join(
                    f"{mode} {args.events / s[-1]:,.0f}/s" for mode, s in seconds.items()),
                    file=sys.stderr)
    finally:
        server.terminate()
        server.wait(15)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000, help="events per mode and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=4,
                        help="BatchCreateInteractions requests in flight")
    parser.add_argument("--server-env", action="append", default=[], metavar="NAME=VALUE",
                        help="extra setting for the ingest server (repeatable)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp, \
            TansuBroker(Path(tmp) / "tansu") as broker:
        seconds = asyncio.run(bench(args, broker.bootstrap))

    eps = {mode: args.events / statistics.median(s) for mode, s in seconds.items()}
    command = " ".join([Path(sys.executable).name, *sys.argv])
    print(f"# ingest throughput — {time.strftime('%Y-%m-%d %H:%M')}")
    print(f"# machine: {machine()}")
    print(f"# command: {command}")
    print(f"# broker: Tansu memory://, {PARTITIONS} partitions; {args.events:,} events per mode, "
          f"median of {args.rounds} rounds; batch concurrency {args.concurrency}")
    print()
    print(f"{'mode':<8} {'events/s':>10} {'x raw':>7}   rounds (events/s)")
    for mode, values in seconds.items():
        rounds = ", ".join(f"{args.events / s:,.0f}" for s in values)
        print(f"{mode:<8} {eps[mode]:>10,.0f} {eps[mode] / eps['raw']:>7.2f}   {rounds}")
    ratio = eps["stream"] / eps["raw"]
    verdict = "meets" if ratio >= TARGET_RATIO else "misses"
    print(f"\nstream/raw {ratio:.2f} {verdict} the target (>= {TARGET_RATIO})")
    print(f"RESULT batch_eps={eps['batch']:.0f} stream_eps={eps['stream']:.0f} "
          f"raw_eps={eps['raw']:.0f} stream_ratio={ratio:.3f} "
          f"batch_ratio={eps['batch'] / eps['raw']:.3f}")


if __name__ == "__main__":
    main()
