"""The trainer's consumer append alone: a topic drained into the durable dataset store.

Starts a Tansu broker (memory://), produces `--events` synthetic events once (MovieLens-20M
shaped: 138,000 users, 27,000 items; key = user id, the mesh's producer settings, a topic of
`--partitions` partitions, as IngestService creates it), then times the trainer's real consumer
(services.trainer.consumer.dataset_consumer with default settings: the core loop, the
DatasetAppender and the DatasetStore with its durable transactions) draining the topic from
empty into a fresh store.

Event ids are what ingest gives an event without one (`--ids derived`, the default: a 128-bit
content hash, so the store's key order is random), or the generator's sequential `syn-...` ids
(`--ids synthetic`, as scale.py sends them).

It prints events/s overall and for each million rows stored (a store that slows as it grows
shows there), the consumer's CPU microseconds per event, the machine and its load average.
`--store-only` leaves out the broker and the consumer: the same events, converted as the
consumer converts them, appended straight to the store, `--batch` per transaction, timing the
appends alone (a quick way to see the store at 20M rows).

    .venv/bin/python scripts/bench/append.py [--events 1M] [--partitions 3] [--ids derived]
        [--batch 50K] [--store-only]
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import platform
import resource
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry

# Run as a file (`python scripts/bench/append.py`): make the repository importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

from recsys.events.v1.interaction_pb2 import Interaction
from scripts.localstack.components import TansuBroker
from services.core.consumer import Record
from services.core.kafka import producer_config
from services.data.synthetic import SyntheticData, SyntheticSpec
from services.ingest.validation import derive_event_id
from services.trainer.consumer import dataset_consumer, stored_event, tune_garbage_collector
from services.trainer.dataset import DatasetStore, StoredEvent
from services.trainer.metrics import TrainerMetrics
from services.trainer.settings import TrainerSettings

USERS, ITEMS = 138_000, 27_000
TOPIC = "interactions"
STEP = 1_000_000  # rows per line of the growth table
TARGET_EPS = 50_000


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text()
                .splitlines() if line.startswith("model name")), platform.processor())
    return f"{platform.node()}: {cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def load() -> str:
    return "/".join(f"{figure:.2f}" for figure in os.getloadavg())


def parse_size(text: str) -> int:
    scale = {"K": 1_000, "M": 1_000_000}.get(text[-1].upper(), 1)
    return int(float(text[:-1] if scale > 1 else text) * scale)


def synthetic_events(count: int, *, derived_ids: bool) -> Iterator[Interaction]:
    for event in SyntheticData(SyntheticSpec(users=USERS, items=ITEMS, events=count)).events():
        if derived_ids:
            event.event_id = derive_event_id(event)
        yield event


def produce(bootstrap: str, *, events: int, partitions: int, derived_ids: bool) -> float:
    """Generate and produce the events (key = user id), every one acknowledged; events/s."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(TOPIC, partitions, 1)])
    finally:
        admin.close()
    producer = KafkaProducer(**producer_config(bootstrap, client_id="bench-append"))
    started = time.perf_counter()
    try:
        for event in synthetic_events(events, derived_ids=derived_ids):
            producer.send(TOPIC, value=event.SerializeToString(), key=event.user_id.encode())
        producer.flush()
    finally:
        producer.close()
    return events / (time.perf_counter() - started)


def drain(bootstrap: str, store_dir: Path, *, events: int, batch: int | None
          ) -> list[tuple[int, float]]:
    """Run the trainer's consumer until the store holds `events` rows; (rows, clock) at the
    first row, at each STEP and at the end."""
    defaults = TrainerSettings()
    settings = dataclasses.replace(defaults, kafka_bootstrap=bootstrap, kafka_topic=TOPIC,
                                   data_dir=str(store_dir),
                                   consumer_batch=batch or defaults.consumer_batch)
    store = DatasetStore(store_dir / "trainer.sqlite3")
    loop = dataset_consumer(store, TrainerMetrics.create(CollectorRegistry()), settings)
    marks: list[tuple[int, float]] = []
    loop.start()
    try:
        next_mark = 1  # the first row, then every STEP
        while (rows := store.row_count) < events:
            if rows >= next_mark:
                marks.append((rows, time.perf_counter()))
                next_mark = rows // STEP * STEP + STEP
            time.sleep(0.02)
        marks.append((rows, time.perf_counter()))
    finally:
        loop.stop()
        store.close()
    return marks


def fill(store_dir: Path, *, events: int, batch: int | None, derived_ids: bool
         ) -> list[tuple[int, float]]:
    """Append the events straight to a fresh store, `batch` per transaction (no broker: the
    store's own cost as it grows); (rows, seconds spent appending) at the start, at each STEP
    and at the end."""
    size = batch or TrainerSettings().consumer_batch
    store = DatasetStore(store_dir / "trainer.sqlite3")
    marks, spent, rows = [(0, 0.0)], 0.0, list[StoredEvent]()
    try:
        for offset, event in enumerate(synthetic_events(events, derived_ids=derived_ids)):
            if (row := stored_event(Record(0, offset, event))) is not None:
                rows.append(row)
            if len(rows) == size or offset == events - 1:
                started = time.perf_counter()
                store.append(rows, topic=TOPIC, next_offsets={0: offset + 1})
                spent += time.perf_counter() - started
                rows = []
                if store.row_count >= marks[-1][0] // STEP * STEP + STEP or offset == events - 1:
                    marks.append((store.row_count, spent))
    finally:
        store.close()
    return marks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--events", type=parse_size, default=1_000_000, help="e.g. 1M, 5M")
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--ids", choices=("derived", "synthetic"), default="derived")
    parser.add_argument("--batch", type=parse_size, default=None,
                        help="events per transaction (default: RECSYS_TRAINER_CONSUMER_BATCH's)")
    parser.add_argument("--store-only", action="store_true",
                        help="no broker: time DatasetStore.append alone as the store grows")
    args = parser.parse_args()
    command = " ".join(["scripts/bench/append.py", *sys.argv[1:]])
    print(f"{command}\n{machine()}\nload average {load()}", flush=True)
    derived_ids = args.ids == "derived"
    tune_garbage_collector()  # as `python -m services.trainer` does
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    with tempfile.TemporaryDirectory(prefix="bench-append-") as tmp:
        if args.store_only:
            marks = fill(Path(tmp), events=args.events, batch=args.batch,
                         derived_ids=derived_ids)
        else:
            with TansuBroker(Path(tmp) / "tansu") as broker:
                produced = produce(broker.bootstrap, events=args.events,
                                   partitions=args.partitions, derived_ids=derived_ids)
                print(f"produced {args.events:,} events at {produced:,.0f} events/s; "
                      f"load {load()}", flush=True)
                cpu_before = resource.getrusage(resource.RUSAGE_SELF)
                marks = drain(broker.bootstrap, Path(tmp) / "dataset", events=args.events,
                              batch=args.batch)
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    # With --store-only this includes generating the events.
    cpu_s = (cpu_after.ru_utime + cpu_after.ru_stime
             - cpu_before.ru_utime - cpu_before.ru_stime)
    print(f"\n{'rows stored':>22}  {'events/s':>9}", flush=True)
    for (rows_before, at_before), (rows, at) in itertools.pairwise(marks):
        print(f"{rows_before:>10,} - {rows:>9,}  {(rows - rows_before) / (at - at_before):>9,.0f}")
    stored, seconds = marks[-1][0] - marks[0][0], marks[-1][1] - marks[0][1]
    eps = stored / seconds
    cpu_label = "process CPU (generating included)" if args.store_only else "process CPU"
    print(f"overall {eps:,.0f} events/s (target >= {TARGET_EPS:,}); {cpu_label} "
          f"{cpu_s / args.events * 1e6:.1f} us per event; load {load()}")
    print(f"RESULT events={args.events} ids={args.ids} store_only={args.store_only} "
          f"append_eps={eps:.0f} "
          f"cpu_us_per_event={cpu_s / args.events * 1e6:.1f} load1={os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
