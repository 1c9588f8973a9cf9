"""Erasure in the trainer's dataset against the real broker: the erased user's rows go once the
dataset holds every event the erasure covers, nobody else's do, and their later events stay."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from recsys.catalog.v1 import catalog_pb2
from recsys.ingest.v1 import ingest_pb2
from scripts.localstack.components import MlflowServer, TansuBroker
from services.core.catalog import AUDIT_LOG, audit_id
from services.ingest.catalog_servicer import SERVICE as CATALOG_SERVICE
from tests.support.events import rating_event
from tests.support.ingest_server import SERVING, start_ingest
from tests.support.polling import eventually_async
from tests.support.trainer_server import (
    start_trainer,
    stop_trainer,
    store_user_rows,
    trainer_settings,
)

pytestmark = pytest.mark.integration


async def test_an_erasure_deletes_the_users_rows_and_keeps_their_later_events(
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
        await eventually_async(lambda: store_user_rows(tmp_path) == {"gone": 5, "kept": 3},
                               timeout=30, what="8 rows stored")
        with caplog.at_level(logging.INFO, logger=AUDIT_LOG):
            await ingest.catalog.EraseUser(catalog_pb2.EraseUserRequest(
                user_id="gone", requested_by="ticket-9"), timeout=10)
            await eventually_async(lambda: store_user_rows(tmp_path) == {"kept": 3}, timeout=30,
                                   what="the erased user's rows deleted")
            await eventually_async(
                lambda: any(getattr(r, "rows", None) == 5 for r in caplog.records),
                timeout=10, what="the trainer's audit line")
        [line] = [r for r in caplog.records if getattr(r, "rows", None) == 5]
        assert (line.user, line.requested_by) == (audit_id("gone"), "ticket-9")  # type: ignore[attr-defined]
        assert "gone" not in line.getMessage()
        await send((20, "gone"))
        await eventually_async(lambda: store_user_rows(tmp_path) == {"kept": 3, "gone": 1},
                               timeout=30, what="the user's later event kept")
    finally:
        await stop_trainer(trainer)
        await ingest.stop()
