"""The catalogue and erasure in the trainer's dataset against the real broker and MLflow: the
catalogue's changes reach the store, the erased user's rows (events and profile) go once the
dataset holds every event the erasure covers, nobody else's do, their later events stay, and the
next version's lineage records the catalogue it was trained beside."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from recsys.catalog.v1 import catalog_pb2
from recsys.events.v1.catalog_pb2 import Item, User
from recsys.ingest.v1 import ingest_pb2
from recsys.trainer.v1 import trainer_pb2
from scripts.localstack.components import MlflowServer, TansuBroker
from services.core.catalog import AUDIT_LOG, audit_id
from services.ingest.catalog_servicer import SERVICE as CATALOG_SERVICE
from tests.support.events import rating_event
from tests.support.ingest_server import SERVING, start_ingest
from tests.support.polling import eventually_async
from tests.support.trainer_server import (
    NO_SEARCH,
    run_job,
    start_trainer,
    stop_trainer,
    store_catalog,
    store_user_rows,
    trainer_settings,
)

pytestmark = pytest.mark.integration

SUCCEEDED = trainer_pb2.JOB_STATE_SUCCEEDED


async def test_the_catalogue_and_an_erasure_reach_the_dataset_and_the_lineage(
        kafka: TansuBroker, mlflow_server: MlflowServer, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    ingest = await start_ingest(kafka.bootstrap)
    await ingest.wait_health(SERVING, CATALOG_SERVICE)
    trainer = await start_trainer(trainer_settings(
        kafka, mlflow_server, ingest.topic, tmp_path, catalog_topic=ingest.settings.catalog_topic))
    try:
        async def send(*events: tuple[int, str]) -> None:
            await ingest.stub.BatchCreateInteractions(ingest_pb2.BatchCreateInteractionsRequest(
                interactions=[rating_event(n, user_id=user) for n, user in events]), timeout=10)

        await send(*((n, "gone") for n in range(5)), *((n, "kept") for n in range(5, 8)))
        catalog = ingest.catalog
        await catalog.BatchUpsertItems(catalog_pb2.BatchUpsertItemsRequest(items=[
            Item(item_id=f"item-{n}", categories=[f"c{n % 2}"], labels=[f"l{n}"])
            for n in range(4, 8)]), timeout=10)
        await catalog.BatchUpsertUsers(catalog_pb2.BatchUpsertUsersRequest(users=[
            User(user_id="gone", labels=["de"]), User(user_id="kept", labels=["fr"])]),
            timeout=10)
        await catalog.HideItem(catalog_pb2.HideItemRequest(item_id="item-5"), timeout=10)
        await catalog.DeleteItem(catalog_pb2.DeleteItemRequest(item_id="item-7"), timeout=10)
        await eventually_async(lambda: store_user_rows(tmp_path) == {"gone": 5, "kept": 3},
                               timeout=30, what="8 rows stored")
        with caplog.at_level(logging.INFO, logger=AUDIT_LOG):
            await ingest.catalog.EraseUser(catalog_pb2.EraseUserRequest(
                user_id="gone", requested_by="ticket-9"), timeout=10)
            await eventually_async(lambda: store_user_rows(tmp_path) == {"kept": 3}, timeout=30,
                                   what="the erased user's rows deleted")
            expected = {"item:item-4": (["c0"], ["l4"], False),
                        "item:item-5": (["c1"], ["l5"], True),
                        "item:item-6": (["c0"], ["l6"], False), "user:kept": ["fr"]}
            await eventually_async(lambda: store_catalog(tmp_path) == expected, timeout=30,
                                   what="the catalogue stored, the erased user's profile gone")
            await eventually_async(
                lambda: any(getattr(r, "rows", None) == 5 for r in caplog.records),
                timeout=10, what="the trainer's audit line")
        [line] = [r for r in caplog.records if getattr(r, "rows", None) == 5]
        assert (line.user, line.requested_by) == (audit_id("gone"), "ticket-9")  # type: ignore[attr-defined]
        assert "gone" not in line.getMessage()
        await send((20, "gone"))
        await eventually_async(lambda: store_user_rows(tmp_path) == {"kept": 3, "gone": 1},
                               timeout=30, what="the user's later event kept")

        job = (await run_job(trainer, search=NO_SEARCH))[-1]
        assert job.state == SUCCEEDED, job.error
        lineage = job.lineage
        assert lineage.item_count == 4  # the hidden item-5 and deleted item-7 still teach
        assert (lineage.catalog_item_count, lineage.catalog_user_count) == (3, 1)
        assert len(lineage.catalog_content_hash) == 64
        version = await asyncio.to_thread(
            MlflowClient(mlflow_server.tracking_uri).get_model_version,
            trainer.settings.model_name, job.model_version)
        assert version.tags["lineage.catalog_item_count"] == "3"
        assert version.tags["lineage.catalog_user_count"] == "1"
        assert version.tags["lineage.catalog_content_hash"] == lineage.catalog_content_hash
    finally:
        await stop_trainer(trainer)
        await ingest.stop()
