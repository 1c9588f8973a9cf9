"""`recsys catalog` and `recsys users erase` against a real ingest server and broker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from recsys.catalog.v1 import catalog_pb2
from recsys.events.v1.catalog_pb2 import CatalogChange, Item
from scripts.localstack.components import TansuBroker
from services.cli.__main__ import main as recsys
from services.ingest.catalog_servicer import SERVICE as CATALOG_SERVICE
from tests.support.ingest_server import SERVING, Ingest, start_ingest
from tests.support.polling import eventually_async
from tests.support.topics import read_topic

pytestmark = pytest.mark.integration


@pytest.fixture
async def ingest(kafka: TansuBroker) -> AsyncIterator[Ingest]:
    running = await start_ingest(kafka.bootstrap)
    await running.wait_health(SERVING, CATALOG_SERVICE)
    yield running
    await running.stop()


async def test_load_hide_and_erase_through_the_command_line(
        ingest: Ingest, kafka: TansuBroker, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    async def run(*argv: str) -> tuple[int, str, str]:
        code = await asyncio.to_thread(recsys, [*argv, "--target", ingest.target])
        out, err = capsys.readouterr()
        return code, out, err

    table = tmp_path / "items.csv"
    table.write_text("sku,cats,tags\n" + "".join(f"a{n},shelf{n % 3},brand:{n % 2}\n"
                                                for n in range(25)) + ",shelf0,\n")
    code, out, _ = await run("catalog", "load", str(table), "--item-col", "sku",
                             "--categories-col", "cats", "--labels-col", "tags",
                             "--chunk-size", "10", "--quiet")
    assert code == 0
    assert "accepted 25 items, rejected 1" in out
    assert "rejected #25: item_id" in out  # indexes count across chunks

    async def listed(hidden: int) -> list[Item] | None:
        page = await ingest.catalog.ListItems(catalog_pb2.ListItemsRequest(page_size=100),
                                              timeout=5)
        return list(page.items) if len(page.items) == 25 and sum(
            i.hidden for i in page.items) == hidden else None

    # Right after the load: the hide completes the item from what the load set.
    code, out, _ = await run("catalog", "hide", "a7")
    assert (code, out.strip()) == (0, "item a7: hidden; categories shelf1; labels brand:1")
    items = await eventually_async(lambda: listed(1), timeout=10, what="a7 read back hidden")
    assert [i.item_id for i in items if i.hidden] == ["a7"]

    code, out, _ = await run("users", "erase", "u1", "--requested-by", "ticket-7")
    assert code == 0
    assert out.startswith("user u1: erasure accepted at ")
    records = await asyncio.to_thread(read_topic, kafka.bootstrap, ingest.settings.catalog_topic)
    [erasure] = [c.user_erasure for c in map(CatalogChange.FromString,
                                             (r.value for r in records))
                 if c.HasField("user_erasure")]
    assert (erasure.user_id, erasure.requested_by) == ("u1", "ticket-7")

    code, _, err = await run("catalog", "load", str(tmp_path / "missing.csv"))
    assert code == 2
    assert "no such file" in err
