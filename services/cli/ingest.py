"""`recsys ingest`: load MovieLens, a CSV/Parquet table or synthetic events through IngestService.

Everything goes over gRPC through StreamInteractions, the same path any client takes, with a
progress bar and a final summary. Exit status: 0 when the stream completed (rejected events
are listed, not fatal), 1 when events failed to publish or the service could not be reached,
2 when the input cannot be read.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from tqdm import tqdm

from recsys.events.v1 import interaction_pb2
from recsys.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from services.cli.common import INGEST, Command, add_target, guarded
from services.core.client import channel
from services.core.tls import ClientTLS
from services.data import loaders
from services.data.synthetic import SyntheticData, SyntheticSpec

SERVICE = ingest_pb2.DESCRIPTOR.services_by_name["IngestService"].full_name
SHOWN_REJECTIONS = 10


@dataclass
class Summary:
    """What a load did; `failed` counts events sent but neither accepted nor rejected."""

    sent: int = 0
    accepted: int = 0
    rejected: int = 0
    rejections: list[ingest_pb2.Rejection] = field(default_factory=list)
    error: str | None = None
    #: What the service reported as (not) published when the call failed.
    failure: ingest_pb2.IngestFailure | None = None
    seconds: float = 0.0

    @property
    def failed(self) -> int:
        return self.sent - self.accepted - self.rejected


def chunked(events: Iterable[interaction_pb2.Interaction], size: int
            ) -> Iterator[list[interaction_pb2.Interaction]]:
    iterator = iter(events)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def wait_until_serving(grpc_channel: grpc.Channel, wait_s: float) -> None:
    """Poll the service's gRPC health until SERVING; raise TimeoutError after `wait_s`."""
    stub = health_pb2_grpc.HealthStub(grpc_channel)
    deadline = time.monotonic() + wait_s
    request = health_pb2.HealthCheckRequest(service=SERVICE)
    while True:
        try:
            answer = stub.Check(request, timeout=2.0, wait_for_ready=True)
            if answer.status == health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.RpcError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{SERVICE} is not SERVING after {wait_s:g} s")
        time.sleep(0.25)


def stream_events(
    events: Iterable[interaction_pb2.Interaction], *, target: str, chunk_size: int = 1000,
    timeout_s: float = 3600.0, wait_s: float = 0.0, progress: tqdm[Any] | None = None,
    tls: ClientTLS | None = None,
) -> Summary:
    """Send `events` through one StreamInteractions call; never raises for an RPC failure
    (the summary carries it, with what the service reported as published).

    Blocking on purpose: grpc.aio's client streams can report a server's early status as
    INTERNAL "Internal error from Core" when a write races the end of the call (grpcio 1.85),
    losing the IngestFailure detail; the threaded client does not. `tls` None: from the
    environment (services.core.client.channel).
    """
    summary = Summary()
    started = time.perf_counter()

    def requests() -> Iterator[ingest_pb2.StreamInteractionsRequest]:
        for chunk in chunked(events, chunk_size):
            summary.sent += len(chunk)
            if progress is not None:
                progress.update(len(chunk))
            yield ingest_pb2.StreamInteractionsRequest(interactions=chunk)

    with channel(target, tls=tls) as grpc_channel:
        try:
            if wait_s > 0:
                wait_until_serving(grpc_channel, wait_s)
            stub = ingest_pb2_grpc.IngestServiceStub(grpc_channel)
            response = stub.StreamInteractions(requests(), timeout=timeout_s)
        except grpc.RpcError as exc:
            summary.error = f"{exc.code().name}: {exc.details()}"
            summary.failure = ingest_failure(exc)
            summary.accepted = summary.failure.accepted_count if summary.failure else 0
        except TimeoutError as exc:
            summary.error = str(exc)
        else:
            summary.accepted = response.accepted_count
            summary.rejected = response.rejected_count
            summary.rejections = list(response.rejections)
    summary.seconds = time.perf_counter() - started
    return summary


def ingest_failure(error: grpc.RpcError) -> ingest_pb2.IngestFailure | None:
    """The IngestFailure detail of a failed call, if it carries one.

    For a stream, the service took in a prefix of the events (accepted + listed + rejected
    ones) and published all of them but the rejected and the listed ones.
    """
    status = rpc_status.from_call(error)
    failure = ingest_pb2.IngestFailure()
    for detail in status.details if status else ():
        if detail.Unpack(failure):
            return failure
    return None


def run_load(events: Iterable[interaction_pb2.Interaction], args: argparse.Namespace,
             total: int | None) -> int:
    """Stream `events` as the parsed `args` say, print the summary; return the exit status."""
    # Read the first event now, so that unreadable input fails before the stream opens.
    iterator = iter(events)
    first = next(iterator, None)
    events = iterator if first is None else itertools.chain([first], iterator)
    with tqdm(total=total, unit="ev", unit_scale=True, desc="ingest", file=sys.stderr,
              disable=args.quiet, mininterval=0.5) as progress:
        summary = stream_events(
            events, target=args.target, chunk_size=args.chunk_size, timeout_s=args.timeout,
            wait_s=args.wait, progress=progress)
    print(format_summary(summary))
    return 1 if summary.error or summary.failed else 0


def format_summary(summary: Summary) -> str:
    rate = summary.sent / summary.seconds if summary.seconds else 0.0
    lines = [f"sent {summary.sent:,} events in {summary.seconds:.1f} s ({rate:,.0f}/s): "
             f"accepted {summary.accepted:,}, rejected {summary.rejected:,}, "
             f"failed {summary.failed:,}"]
    for rejection in summary.rejections[:SHOWN_REJECTIONS]:
        lines.append(f"  rejected #{rejection.index}: {rejection.field} {rejection.reason}")
    if summary.rejected > SHOWN_REJECTIONS:
        lines.append(f"  ... and {summary.rejected - SHOWN_REJECTIONS:,} more rejected")
    if summary.error:
        lines.append(f"error: {summary.error}")
    return "\n".join(lines)


# -- subcommands -------------------------------------------------------------------------------


def _movielens(args: argparse.Namespace) -> int:
    total = loaders.count_movielens(args.path, args.format)
    return run_load(loaders.read_movielens(args.path, args.format), args, total)


def _table(args: argparse.Namespace) -> int:
    fixed_type = None if args.type_col else loaders.parse_type(args.type)
    if fixed_type == interaction_pb2.INTERACTION_TYPE_UNSPECIFIED:
        raise loaders.DataError(f"unknown --type {args.type!r}")
    columns = loaders.Columns(
        user=args.user_col, item=args.item_col, time=args.time_col, time_unit=args.time_unit,
        value=args.value_col, type=args.type_col, fixed_type=fixed_type,
        event_id=args.event_id_col, context=tuple(args.context_col))
    total = loaders.count_rows(args.path, fmt=args.format)
    events = loaders.read_table(args.path, columns, fmt=args.format, delimiter=args.delimiter)
    return run_load(events, args, total)


def synthetic_spec(args: argparse.Namespace) -> SyntheticSpec:
    """The generator's spec from `add_synthetic_arguments`' options."""
    return SyntheticSpec(users=args.users, items=args.items, events=args.events,
                         seed=args.seed, factors=args.factors, days=args.days,
                         popularity_exponent=args.popularity_exponent, clusters=args.clusters,
                         favourite_clusters=args.favourite_clusters, explore=args.explore)


def _synthetic(args: argparse.Namespace) -> int:
    spec = synthetic_spec(args)
    return run_load(SyntheticData(spec).events(), args, spec.events)


def _input_guarded(command: Command) -> Command:
    """Unreadable or invalid input exits 2 with one line; RPC failures are in the summary."""
    return guarded(command, input_errors=(loaders.DataError, ValueError, OSError))


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    common = argparse.ArgumentParser(add_help=False)
    add_target(common, INGEST)
    common.add_argument("--chunk-size", type=_positive, default=1000,
                        help="events per stream message, at most the service's batch limit")
    common.add_argument("--timeout", type=float, default=3600.0,
                        help="deadline of the whole load in seconds (default 3600)")
    common.add_argument("--wait", type=float, default=10.0,
                        help="seconds to wait for the service to be SERVING (default 10)")
    common.add_argument("--quiet", action="store_true", help="no progress bar")

    ingest = subparsers.add_parser(
        "ingest", help="load interaction events through IngestService",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sources = ingest.add_subparsers(dest="source", required=True)

    movielens = sources.add_parser(
        "movielens", parents=[common], help="MovieLens ratings (ml-100k, ml-1m, ml-latest)")
    movielens.add_argument("path", type=Path,
                           help="dataset directory or its u.data / ratings.dat / ratings.csv")
    movielens.add_argument("--format", choices=["auto", "100k", "1m", "latest"],
                           default="auto", help="file layout (default: from the file name)")
    movielens.set_defaults(func=_input_guarded(_movielens))

    table = sources.add_parser(
        "csv", parents=[common], help="a CSV (with a header) or Parquet table",
        description="One event per row; columns are mapped with the --*-col options. Rejected "
                    "events are reported by data row, from 0 (blank lines are skipped).")
    table.add_argument("path", type=Path)
    table.add_argument("--format", choices=["auto", "csv", "parquet"], default="auto",
                       help="default: parquet for .parquet/.pq files, else csv")
    table.add_argument("--delimiter", default=",", help="CSV field separator (default ,)")
    table.add_argument("--user-col", required=True)
    table.add_argument("--item-col", required=True)
    table.add_argument("--time-col", required=True)
    table.add_argument("--time-unit", choices=["s", "ms", "iso"], default="s",
                       help="epoch seconds, epoch milliseconds or ISO 8601 (default s)")
    table.add_argument("--value-col", help="rating or weight column")
    table.add_argument("--event-id-col", help="idempotency key column (default: derived)")
    table.add_argument("--context-col", action="append", default=[],
                       help="column copied into the event's context (repeatable)")
    kind = table.add_mutually_exclusive_group(required=True)
    kind.add_argument("--type", help="one type for every row: view, click, add_to_cart, "
                                     "purchase, rating, like or share")
    kind.add_argument("--type-col", help="column holding each row's type name")
    table.set_defaults(func=_input_guarded(_table))

    synthetic = sources.add_parser(
        "synthetic", parents=[common],
        help="generated events (taste clusters, latent factors, power law)")
    add_synthetic_arguments(synthetic)
    synthetic.set_defaults(func=_input_guarded(_synthetic))


def add_synthetic_arguments(synthetic: argparse.ArgumentParser) -> None:
    """The generator's options (`recsys ingest synthetic`, `recsys catalog synthetic`)."""
    synthetic.add_argument("--users", type=_positive, required=True)
    synthetic.add_argument("--items", type=_positive, required=True)
    synthetic.add_argument("--events", type=_positive, required=True)
    synthetic.add_argument("--seed", type=int, default=42)
    synthetic.add_argument("--factors", type=_positive, default=16)
    synthetic.add_argument("--days", type=float, default=90.0,
                           help="days the events span, from 2024-01-01 (default 90)")
    synthetic.add_argument("--popularity-exponent", type=float, default=1.0,
                           help="Zipf exponent of item popularity (default 1.0)")
    synthetic.add_argument("--clusters", type=int, default=0,
                           help="taste clusters (genres); 0: about sqrt(items) / 2 (default)")
    synthetic.add_argument("--favourite-clusters", type=_positive, default=3,
                           help="favourite clusters per user (default 3)")
    synthetic.add_argument("--explore", type=float, default=0.1,
                           help="share of events outside a user's favourites (default 0.1)")
