"""Freshness: how soon after IngestService acknowledges an event the recommender's answer shows it.

Starts Tansu, Redis and MLflow, registers a champion (random factors: 2,000 users, 5,000
items, 32 factors), then `python -m services.ingest` and `python -m services.recommender` (its
history consumer on, the in-process answer tier and Redis in front of the model, as deployed).
Each sample takes a user's current top item, sends a click on it through CreateInteraction,
and from the moment the broker's acknowledgement returns polls Recommend for that user until
the item has left the answer (the history consumer read the event, wrote the user's history
to Redis, and dropped the user's cached answers). Samples run one after another, each for a
different user, so each measures one event's way through the broker, the consumer, Redis and
the cache invalidation. The figure is the time from the ack to the first changed answer
(p50, p99, max); tests assert only that the change happens (tests/integration/recommender/
test_freshness.py).

    .venv/bin/python scripts/bench/freshness.py [--samples 200]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import grpc

# Run as a file (`python scripts/bench/freshness.py`): make the repository's `scripts` importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from recsys.events.v1 import interaction_pb2
from recsys.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from recsys.recommender.v1 import recommender_pb2, recommender_pb2_grpc
from scripts.bench.serve import random_artifact, register
from scripts.localstack.components import MlflowServer, RedisServer, TansuBroker
from scripts.localstack.service import ServiceProcess

MODEL = "bench-freshness"
USERS, ITEMS = 2000, 5000
#: Between two looks at the answer; the figures' resolution.
POLL_S = 0.002
GIVE_UP_S = 30.0


def sample(user: str, ingest: ingest_pb2_grpc.IngestServiceStub,
           recommender: recommender_pb2_grpc.RecommenderServiceStub) -> float:
    """Seconds from the ack of a click on `user`'s top item to an answer without it."""
    request = recommender_pb2.RecommendRequest(user_id=user, k=10)
    top = recommender.Recommend(request, timeout=5).items[0].item_id
    event = interaction_pb2.Interaction(user_id=user, item_id=top,
                                        type=interaction_pb2.INTERACTION_TYPE_CLICK)
    event.occurred_at.GetCurrentTime()
    ingest.CreateInteraction(ingest_pb2.CreateInteractionRequest(interaction=event), timeout=10)
    acked = time.perf_counter()
    while time.perf_counter() - acked < GIVE_UP_S:
        items = {item.item_id for item in recommender.Recommend(request, timeout=5).items}
        if top not in items:
            return time.perf_counter() - acked
        time.sleep(POLL_S)
    raise RuntimeError(f"{user}: {top} still recommended {GIVE_UP_S:.0f} s after the ack")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=200)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-freshness-") as tmp:
        work = Path(tmp)
        with (TansuBroker(work / "tansu") as kafka, RedisServer(work / "redis") as redis,
              MlflowServer(work / "mlflow") as mlflow):
            register(mlflow.tracking_uri, MODEL, random_artifact(USERS, ITEMS, 32,
                                                                 seen_per_user=20), work)
            settings = {"RECSYS_KAFKA_BOOTSTRAP": kafka.bootstrap,
                        "RECSYS_KAFKA_TOPIC": "freshness", "RECSYS_LOG_LEVEL": "WARNING"}
            with (ServiceProcess(work / "ingest", "ingest", environ=settings) as ingest,
                  ServiceProcess(work / "recommender", "recommender", environ={
                      **settings, "RECSYS_MLFLOW_TRACKING_URI": mlflow.tracking_uri,
                      "RECSYS_MODEL_NAME": MODEL, "RECSYS_REDIS_URL": redis.url,
                  }) as recommender_process,
                  grpc.insecure_channel(ingest.target) as ingest_channel,
                  grpc.insecure_channel(recommender_process.target) as recommender_channel):
                stubs = (ingest_pb2_grpc.IngestServiceStub(ingest_channel),
                         recommender_pb2_grpc.RecommenderServiceStub(recommender_channel))
                sample("u0", *stubs)  # warm-up: connections, the consumer's assignment
                seconds = [sample(f"u{1 + n % (USERS - 1)}", *stubs)
                           for n in range(args.samples)]
    report(seconds, " ".join(sys.argv))


def report(seconds: list[float], command: str) -> None:
    ms = [s * 1000 for s in seconds]
    figures = {"p50": statistics.median(ms),
               "p99": statistics.quantiles(ms, n=100, method="inclusive")[98], "max": max(ms)}
    print(f"\nmachine: {platform.platform()}, {os.cpu_count()} CPUs "
          f"({platform.processor() or platform.machine()}); servers and client share it")
    print(f"command: {command}")
    print(f"\n{'from the ingest ack to a changed Recommend answer':<52}{'ms':>10}")
    for name, value in figures.items():
        print(f"  {name:<50}{value:>10.1f}")
    print(f"  {'samples':<50}{len(ms):>10}")
    print(f"RESULT freshness_p50_ms={figures['p50']:.1f} freshness_p99_ms={figures['p99']:.1f} "
          f"freshness_max_ms={figures['max']:.1f} samples={len(ms)}")


if __name__ == "__main__":
    main()
