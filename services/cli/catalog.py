"""`recsys catalog ...` and `recsys users erase`: the catalogue through CatalogService (served
by the ingest server).

`catalog load` and `catalog movielens` send items in BatchUpsertItems calls of `--chunk-size`
with a progress bar and a summary; rejected items are listed (exit 0), a failed call exits 1,
unreadable input 2.
"""

from __future__ import annotations

import argparse
import getpass
import itertools
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import grpc
from tqdm import tqdm

from recsys.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from recsys.events.v1.catalog_pb2 import Item
from services.cli.common import (
    CATALOG,
    Command,
    add_json_flag,
    add_target,
    guarded,
    show,
)
from services.cli.ingest import add_synthetic_arguments, synthetic_spec
from services.core.client import DEFAULT_TIMEOUT_S, channel
from services.data import items as item_files
from services.data.loaders import DataError, count_rows
from services.data.synthetic import SyntheticData

SHOWN_REJECTIONS = 10


def _stub(target: str) -> tuple[grpc.Channel, catalog_pb2_grpc.CatalogServiceStub]:
    chan = channel(target)
    return chan, catalog_pb2_grpc.CatalogServiceStub(chan)


def upload(items: Iterable[Item], *, target: str, chunk_size: int, total: int | None,
           quiet: bool = False) -> tuple[int, list[catalog_pb2.Rejection]]:
    """Send `items` in batches; how many were accepted, and the rejections (indexes into
    `items`). A failed call raises grpc.RpcError."""
    accepted, rejections = 0, []
    iterator = iter(items)
    chan, stub = _stub(target)
    with chan, tqdm(total=total, unit="item", unit_scale=True, desc="catalog",
                    file=sys.stderr, disable=quiet, mininterval=0.5) as progress:
        start = 0
        while chunk := list(itertools.islice(iterator, chunk_size)):
            reply = stub.BatchUpsertItems(catalog_pb2.BatchUpsertItemsRequest(items=chunk),
                                          timeout=DEFAULT_TIMEOUT_S)
            accepted += reply.accepted_count
            rejections += [catalog_pb2.Rejection(index=r.index + start, field=r.field,
                                                 reason=r.reason) for r in reply.rejections]
            start += len(chunk)
            progress.update(len(chunk))
    return accepted, rejections


def _print_upload(accepted: int, rejections: list[catalog_pb2.Rejection]) -> int:
    print(f"accepted {accepted:,} items, rejected {len(rejections):,}")
    for rejection in rejections[:SHOWN_REJECTIONS]:
        print(f"  rejected #{rejection.index}: {rejection.field} {rejection.reason}")
    if len(rejections) > SHOWN_REJECTIONS:
        print(f"  ... and {len(rejections) - SHOWN_REJECTIONS:,} more rejected")
    return 0


def _first_read(items: Iterator[Item]) -> Iterator[Item]:
    """`items` with the first one read now, so that unreadable input fails before any call."""
    first = next(items, None)
    return items if first is None else itertools.chain([first], items)


def _load(args: argparse.Namespace) -> int:
    columns = item_files.ItemColumns(
        item=args.item_col, categories=args.categories_col, labels=args.labels_col,
        title=args.title_col, hidden=args.hidden_col, separator=args.separator)
    items = _first_read(item_files.read_items(args.path, columns, fmt=args.format,
                                              delimiter=args.delimiter))
    total = count_rows(args.path, fmt=args.format)
    return _print_upload(*upload(items, target=args.target, chunk_size=args.chunk_size,
                                 total=total, quiet=args.quiet))


def _movielens(args: argparse.Namespace) -> int:
    items = _first_read(item_files.read_movies(args.path, args.format))
    return _print_upload(*upload(items, target=args.target, chunk_size=args.chunk_size,
                                 total=item_files.count_movies(args.path, args.format),
                                 quiet=args.quiet))


def _synthetic(args: argparse.Namespace) -> int:
    spec = synthetic_spec(args)
    return _print_upload(*upload(SyntheticData(spec).items(), target=args.target,
                                 chunk_size=args.chunk_size, total=spec.items,
                                 quiet=args.quiet))


def _print_item(item: Item) -> None:
    state = "hidden" if item.hidden else "recommendable"
    print(f"item {item.item_id}: {state}; categories {', '.join(item.categories) or '-'}; "
          f"labels {', '.join(item.labels) or '-'}")


def _hide(args: argparse.Namespace) -> int:
    chan, stub = _stub(args.target)
    with chan:
        if args.command_name == "hide":
            reply: Any = stub.HideItem(catalog_pb2.HideItemRequest(item_id=args.item),
                                       timeout=DEFAULT_TIMEOUT_S)
        else:
            reply = stub.UnhideItem(catalog_pb2.UnhideItemRequest(item_id=args.item),
                                    timeout=DEFAULT_TIMEOUT_S)
    return show(args, reply, lambda r: _print_item(r.item))


def _erase(args: argparse.Namespace) -> int:
    chan, stub = _stub(args.target)
    with chan:
        reply = stub.EraseUser(catalog_pb2.EraseUserRequest(
            user_id=args.user, requested_by=args.requested_by), timeout=DEFAULT_TIMEOUT_S)
    return show(args, reply, lambda r: print(
        f"user {args.user}: erasure accepted at {r.requested_at.ToJsonString()}"))


def _input_guarded(command: Command) -> Command:
    return guarded(command, input_errors=(DataError, ValueError, OSError))


def _positive(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 1000:
        raise argparse.ArgumentTypeError(f"must be 1 to 1000, got {value}")
    return value


def register(subparsers: Any) -> None:
    common = argparse.ArgumentParser(add_help=False)
    add_target(common, CATALOG)
    common.add_argument("--chunk-size", type=_positive, default=1000,
                        help="items per BatchUpsertItems call, at most 1000 (default)")
    common.add_argument("--quiet", action="store_true", help="no progress bar")

    catalog = subparsers.add_parser(
        "catalog", help="the item catalogue: load, movielens, synthetic, hide, unhide",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = catalog.add_subparsers(dest="catalog_command", required=True)

    load = commands.add_parser(
        "load", parents=[common], help="items from a CSV (with a header) or Parquet table",
        description="One item per row; columns are mapped with the --*-col options. List "
                    "columns hold their values joined by --separator.")
    load.add_argument("path", type=Path)
    load.add_argument("--format", choices=["auto", "csv", "parquet"], default="auto")
    load.add_argument("--delimiter", default=",", help="CSV field separator (default ,)")
    load.add_argument("--item-col", default="item_id", help="default item_id")
    load.add_argument("--categories-col", help="categories, joined by --separator")
    load.add_argument("--labels-col", help="labels, joined by --separator")
    load.add_argument("--title-col")
    load.add_argument("--hidden-col", help="1, true or yes: hidden")
    load.add_argument("--separator", default="|", help="list separator (default |)")
    load.set_defaults(func=_input_guarded(_load))

    movielens = commands.add_parser(
        "movielens", parents=[common],
        help="MovieLens movies (u.item, movies.dat, movies.csv): genres as categories, "
             "year labels, titles")
    movielens.add_argument("path", type=Path, help="dataset directory or its movies file")
    movielens.add_argument("--format", choices=["auto", "100k", "1m", "latest"],
                           default="auto")
    movielens.set_defaults(func=_input_guarded(_movielens))

    synthetic = commands.add_parser(
        "synthetic", parents=[common],
        help="the synthetic generator's items, each in its taste cluster's category "
             "genre-<n> (give the options `recsys ingest synthetic` got)")
    add_synthetic_arguments(synthetic)
    synthetic.set_defaults(func=_input_guarded(_synthetic))

    for name, text in (("hide", "take an item out of every answer"),
                       ("unhide", "let a hidden item be recommended again")):
        command = commands.add_parser(name, help=text)
        command.add_argument("item", help="item id")
        add_target(command, CATALOG)
        add_json_flag(command)
        command.set_defaults(func=guarded(_hide), command_name=name)

    users = subparsers.add_parser("users", help="users' data: erase")
    user_commands = users.add_subparsers(dest="users_command", required=True)
    erase = user_commands.add_parser(
        "erase", help="erase a user's data (interactions, history, cached answers, profile)")
    erase.add_argument("user", help="user id")
    erase.add_argument("--requested-by", default=f"cli:{getpass.getuser()}",
                       help="who asks, for the audit log (default cli:$USER)")
    add_target(erase, CATALOG)
    add_json_flag(erase)
    erase.set_defaults(func=guarded(_erase))
