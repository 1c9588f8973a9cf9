"""`recsys ingest` end to end: the command line, over gRPC, into a real ingest server and broker."""

from __future__ import annotations

import asyncio
import os
import sys
from collections import Counter
from pathlib import Path

import pytest

from recsys.events.v1 import interaction_pb2
from scripts.localstack.components import TansuBroker, free_port
from services.data.synthetic import SyntheticData, SyntheticSpec
from services.ingest.validation import derive_event_id
from tests.support.ingest_server import Ingest
from tests.support.paths import REPO
from tests.support.topics import read_topic

pytestmark = pytest.mark.integration

MOVIELENS_ROWS = 5_000


async def recsys(*args: str, target: str | None = None) -> tuple[int, str, str]:
    """Run `python -m services.cli ...`; (exit status, stdout, stderr)."""
    env = dict(os.environ)
    if target:
        env["RECSYS_CLI_INGEST_TARGET"] = target
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli", *args, cwd=REPO, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await asyncio.wait_for(process.communicate(), 300)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def topic_ids(kafka: TansuBroker, ingest: Ingest) -> Counter[str]:
    records = await asyncio.to_thread(read_topic, kafka.bootstrap, ingest.topic)
    return Counter(interaction_pb2.Interaction.FromString(r.value).event_id for r in records)


def write_movielens_100k(directory: Path, rows: int) -> Path:
    """A `u.data` in MovieLens-100k's layout (user, item, rating, time), its users and items
    from the synthetic generator; one second apart, so no two rows are the same rating."""
    events = SyntheticData(SyntheticSpec(users=300, items=200, events=rows, seed=7)).events()
    start = 880_000_000
    (directory / "u.data").write_text("".join(
        f"{e.user_id}\t{e.item_id}\t{1 + n % 5}\t{start + n}\n" for n, e in enumerate(events)))
    return directory


async def test_a_movielens_file_puts_every_rating_on_the_topic_once(
    ingest: Ingest, kafka: TansuBroker, tmp_path: Path
) -> None:
    movielens = write_movielens_100k(tmp_path, MOVIELENS_ROWS)
    code, stdout, stderr = await recsys("ingest", "movielens", str(movielens),
                                        target=ingest.target)
    assert code == 0, stdout + stderr
    assert f"accepted {MOVIELENS_ROWS:,}, rejected 0, failed 0" in stdout

    on_topic = await topic_ids(kafka, ingest)
    assert sum(on_topic.values()) == MOVIELENS_ROWS
    assert len(on_topic) == MOVIELENS_ROWS  # every rating once, under its content-derived id
    first = (movielens / "u.data").read_text().splitlines()[0].split("\t")
    event = interaction_pb2.Interaction(
        user_id=first[0], item_id=first[1], type=interaction_pb2.INTERACTION_TYPE_RATING,
        value=float(first[2]))
    event.occurred_at.FromSeconds(int(first[3]))
    assert derive_event_id(event) in on_topic


async def test_synthetic_events_load_with_their_ids(ingest: Ingest, kafka: TansuBroker) -> None:
    code, stdout, _ = await recsys(
        "ingest", "synthetic", "--users", "300", "--items", "200", "--events", "5000",
        "--seed", "5", "--target", ingest.target, "--chunk-size", "700")
    assert code == 0
    assert "accepted 5,000, rejected 0, failed 0" in stdout
    assert await topic_ids(kafka, ingest) == Counter(f"syn-5-{i}" for i in range(5000))


async def test_a_csv_load_reports_rejected_rows_and_publishes_the_rest(
    ingest: Ingest, kafka: TansuBroker, tmp_path: Path
) -> None:
    table = tmp_path / "clicks.csv"
    table.write_text("user,item,at\nu1,i1,1700000000\n,i2,1700000001\nu3,i3,1700000002\n")
    code, stdout, _ = await recsys(
        "ingest", "csv", str(table), "--user-col", "user", "--item-col", "item",
        "--time-col", "at", "--type", "click", target=ingest.target)
    assert code == 0
    assert "accepted 2, rejected 1, failed 0" in stdout
    assert "rejected #1: user_id must be 1 to 128 printable characters" in stdout
    assert sum((await topic_ids(kafka, ingest)).values()) == 2


async def test_an_unreachable_service_fails_with_status_1() -> None:
    code, stdout, _ = await recsys(
        "ingest", "synthetic", "--users", "5", "--items", "5", "--events", "10",
        "--target", f"127.0.0.1:{free_port()}", "--wait", "0", "--timeout", "5")
    assert code == 1
    assert "failed 10" in stdout
    assert "error: UNAVAILABLE" in stdout


async def test_unreadable_input_fails_with_status_2(tmp_path: Path) -> None:
    code, _, stderr = await recsys("ingest", "movielens", str(tmp_path), "--wait", "0")
    assert code == 2
    assert stderr.strip() == (f"recsys ingest: error: {tmp_path}: no MovieLens ratings file "
                              "(u.data or ratings.dat or ratings.csv) found")
