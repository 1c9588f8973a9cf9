"""`recsys ingest` argument handling and output, without a server."""

from __future__ import annotations

from pathlib import Path

import pytest

from recsys.events.v1 import interaction_pb2
from recsys.ingest.v1 import ingest_pb2
from services.cli.__main__ import build_parser, main
from services.cli.ingest import Summary, chunked, format_summary


def test_the_subcommands_parse_with_their_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECSYS_CLI_INGEST_TARGET", "ingest:50051")
    args = build_parser().parse_args(["ingest", "movielens", "data/ml-1m", "--format", "1m"])
    assert (args.source, args.path, args.format) == ("movielens", Path("data/ml-1m"), "1m")
    assert (args.target, args.chunk_size, args.wait) == ("ingest:50051", 1000, 10.0)
    args = build_parser().parse_args(
        ["ingest", "synthetic", "--users", "5", "--items", "6", "--events", "7", "--seed", "8"])
    assert (args.users, args.items, args.events, args.seed) == (5, 6, 7, 8)
    args = build_parser().parse_args(
        ["ingest", "csv", "t.csv", "--user-col", "u", "--item-col", "i", "--time-col", "t",
         "--type-col", "k", "--context-col", "a", "--context-col", "b"])
    assert (args.type_col, args.context_col, args.type) == ("k", ["a", "b"], None)


def test_the_synthetic_taste_options_parse_and_a_bad_one_exits_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    synthetic = ["ingest", "synthetic", "--users", "5", "--items", "6", "--events", "7"]
    args = build_parser().parse_args([
        *synthetic, "--clusters", "4", "--favourite-clusters", "2", "--explore", "0.2",
        "--popularity-exponent", "1.2"])
    assert (args.clusters, args.favourite_clusters, args.explore,
            args.popularity_exponent) == (4, 2, 0.2, 1.2)
    assert main([*synthetic, "--explore", "1.5", "--target", "127.0.0.1:1"]) == 2
    assert capsys.readouterr().err == "recsys ingest: error: explore must be between 0 and 1\n"


@pytest.mark.parametrize("argv", [
    ["ingest", "csv", "t.csv", "--user-col", "u", "--item-col", "i", "--time-col", "t"],
    ["ingest", "synthetic", "--users", "0", "--items", "1", "--events", "1"],
    ["ingest", "movielens", "x", "--format", "10m"],
])
def test_bad_arguments_exit_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        build_parser().parse_args(argv)
    assert caught.value.code == 2


def test_an_unknown_type_is_refused_before_anything_is_sent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = tmp_path / "t.csv"
    table.write_text("u,i,t\na,b,1\n")
    code = main(["ingest", "csv", str(table), "--user-col", "u", "--item-col", "i",
                 "--time-col", "t", "--type", "teleport", "--target", "127.0.0.1:1"])
    assert code == 2
    assert capsys.readouterr().err == "recsys ingest: error: unknown --type 'teleport'\n"


def test_chunked_keeps_order_and_sizes() -> None:
    events = [interaction_pb2.Interaction(item_id=str(n)) for n in range(5)]
    assert [[e.item_id for e in chunk] for chunk in chunked(events, 2)] == [
        ["0", "1"], ["2", "3"], ["4"]]


def test_the_summary_counts_and_lists_rejections() -> None:
    summary = Summary(sent=1000, accepted=985, rejected=12, seconds=2.0, rejections=[
        ingest_pb2.Rejection(index=i, field="user_id", reason="must be 1 to 128 printable "
                             "characters") for i in range(12)], error="UNAVAILABLE: gone")
    lines = format_summary(summary).splitlines()
    assert lines[0] == ("sent 1,000 events in 2.0 s (500/s): accepted 985, rejected 12, "
                        "failed 3")
    assert lines[1] == "  rejected #0: user_id must be 1 to 128 printable characters"
    assert lines[-2:] == ["  ... and 2 more rejected", "error: UNAVAILABLE: gone"]
