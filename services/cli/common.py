"""What every `recsys` subcommand shares: where its service is, and how a failure reads.

Targets come from `--target`, else a `RECSYS_CLI_<SERVICE>_TARGET` variable. The `CLI` in
the name keeps these apart from the services' own `RECSYS_<SERVICE>_*` settings, which reject
unknown variables of their prefix at start.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message

Command = Callable[[argparse.Namespace], int]
M = TypeVar("M", bound=Message)


@dataclass(frozen=True)
class Target:
    service: str
    env: str
    default: str


INGEST = Target("IngestService", "RECSYS_CLI_INGEST_TARGET", "127.0.0.1:50051")
TRAINER = Target("TrainerService", "RECSYS_CLI_TRAINER_TARGET", "127.0.0.1:50052")
RECOMMENDER = Target("RecommenderService", "RECSYS_CLI_RECOMMENDER_TARGET", "127.0.0.1:50053")
# CatalogService is served by the ingest server.
CATALOG = Target("CatalogService (ingest server)", INGEST.env, INGEST.default)


def add_target(parser: argparse.ArgumentParser, target: Target) -> None:
    parser.add_argument(
        "--target", default=os.environ.get(target.env, target.default),
        help=f"{target.service} host:port (default ${target.env} or {target.default})")


def guarded(command: Command, *, input_errors: tuple[type[Exception], ...] = ()) -> Command:
    """Print a failure as one line on stderr instead of a traceback.

    A failed call exits 1 (`error: CODE: details`); one of `input_errors` (unreadable or
    invalid input) exits 2, like argparse's own usage errors.
    """

    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except grpc.RpcError as exc:
            print(f"recsys {args.command}: error: {exc.code().name}: {exc.details()}",
                  file=sys.stderr)
            return 1
        except input_errors as exc:
            print(f"recsys {args.command}: error: {exc}", file=sys.stderr)
            return 2

    return run


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true",
                        help="print the reply as JSON (the REST API's shape) for scripts")


def show(args: argparse.Namespace, reply: M, render: Callable[[M], None]) -> int:
    """Print `reply` as JSON (`--json`) or with `render`, for people; exit status 0."""
    if args.json:
        print(json_format.MessageToJson(reply, indent=2))
    else:
        render(reply)
    return 0
