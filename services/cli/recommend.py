"""`recsys recommend USER`, `recsys similar ITEM` and `recsys model-info`: ask the recommender."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

import grpc

from recsys.recommender.v1 import recommender_pb2, recommender_pb2_grpc
from services.cli.common import RECOMMENDER, add_json_flag, add_target, guarded, show
from services.core.client import DEFAULT_TIMEOUT_S, channel


def register(subparsers: Any) -> None:
    recommend = subparsers.add_parser(
        "recommend", help="top-k items for a user",
        description="Ask the recommender for a user's top items, as an application would.")
    recommend.add_argument("user", help="user id")
    recommend.add_argument("-k", type=int, default=10, help="number of items (default 10)")
    recommend.add_argument("--include-seen", action="store_true",
                           help="keep items the user already interacted with")
    recommend.add_argument("--exclude", nargs="+", default=[], metavar="ITEM",
                           help="items to leave out")
    recommend.add_argument("--category", action="append", default=[], dest="categories",
                           help="only items in this catalogue category (repeatable: any)")
    add_target(recommend, RECOMMENDER)
    add_json_flag(recommend)
    recommend.set_defaults(func=guarded(_recommend))

    similar = subparsers.add_parser("similar", help="items nearest to an item (cosine)")
    similar.add_argument("item", help="item id")
    similar.add_argument("-k", type=int, default=10, help="number of items (default 10)")
    similar.add_argument("--category", action="append", default=[], dest="categories",
                         help="only items in this catalogue category (repeatable: any)")
    add_target(similar, RECOMMENDER)
    add_json_flag(similar)
    similar.set_defaults(func=guarded(_similar))

    info = subparsers.add_parser("model-info", help="the model version being served")
    add_target(info, RECOMMENDER)
    add_json_flag(info)
    info.set_defaults(func=guarded(_model_info))


def _stub(target: str) -> tuple[grpc.Channel, recommender_pb2_grpc.RecommenderServiceStub]:
    chan = channel(target)
    return chan, recommender_pb2_grpc.RecommenderServiceStub(chan)


def _print_items(heading: str, items: Sequence[recommender_pb2.ScoredItem]) -> None:
    print(heading)
    print(f"{'RANK':>4}  {'SCORE':>9}  ITEM")
    for rank, item in enumerate(items, 1):
        cold = "  (new: scored by its labels)" if item.cold_start else ""
        print(f"{rank:>4}  {item.score:>9.4f}  {item.item_id}{cold}")


def _recommend(args: argparse.Namespace) -> int:
    request = recommender_pb2.RecommendRequest(
        user_id=args.user, k=args.k, exclude_seen=not args.include_seen,
        exclude_item_ids=args.exclude, categories=args.categories)
    chan, stub = _stub(args.target)
    with chan:
        reply = stub.Recommend(request, timeout=DEFAULT_TIMEOUT_S)
    return show(args, reply, lambda r: _print_items(
        f"user {args.user}: model version {r.model_version}, strategy "
        f"{recommender_pb2.Strategy.Name(r.strategy).removeprefix('STRATEGY_').lower()}",
        r.items))


def _similar(args: argparse.Namespace) -> int:
    chan, stub = _stub(args.target)
    with chan:
        reply = stub.SimilarItems(
            recommender_pb2.SimilarItemsRequest(item_id=args.item, k=args.k,
                                                categories=args.categories),
            timeout=DEFAULT_TIMEOUT_S)
    return show(args, reply, lambda r: _print_items(
        f"items like {args.item}: model version {r.model_version}, score = cosine", r.items))


def _model_info(args: argparse.Namespace) -> int:
    chan, stub = _stub(args.target)
    with chan:
        info = stub.GetModelInfo(recommender_pb2.GetModelInfoRequest(),
                                 timeout=DEFAULT_TIMEOUT_S)
    return show(args, info, _print_model_info)


def _print_model_info(info: recommender_pb2.GetModelInfoResponse) -> None:
    m, lineage = info.metrics, info.lineage
    offsets = ", ".join(f"{p}:{o}" for p, o in sorted(lineage.partition_offsets.items()))
    rows = (
        ("model", f"{info.model_name} version {info.model_version} (alias {info.alias})"),
        ("loaded at", info.loaded_at.ToDatetime().strftime("%Y-%m-%d %H:%M:%S UTC")),
        ("size", f"{info.user_count} users, {info.item_count} items, {info.factors} factors"),
        ("metrics", f"NDCG@10 {m.ndcg_at_10:.4f}  P@10 {m.precision_at_10:.4f}  "
                    f"R@10 {m.recall_at_10:.4f}  MAP@10 {m.map_at_10:.4f}  "
                    f"({m.users_evaluated} users)"),
        ("trained on", f"{lineage.row_count} events from topic {lineage.topic or '-'} "
                       f"(offsets {offsets or '-'}), content {lineage.content_hash[:12] or '-'}"),
        ("scoring", ("top lists ranked at load, else " if info.scoring.top_lists else "")
         + (f"item index: recall@10 {info.scoring.recall_at_10:.3f}, "
            f"{info.scoring.scanned_ratio:.1%} of the catalogue per query"
            if info.scoring.approximate else "exact (every item)")),
        ("catalogue", f"{info.catalog.items} items ({info.catalog.blocked_items} not "
                      f"recommendable now, {info.catalog.cold_start_items} new to the model), "
                      f"{info.catalog.users} user profiles"),
    )
    for name, value in rows:
        print(f"{name + ':':<12} {value}")
