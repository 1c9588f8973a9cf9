"""MovieLens-100k ingested once through IngestService, and a trainer that consumed it.

The topic is shared by every trainer test (each trainer reads it with its own consumer group);
the in-process trainer lives for the module, so its dataset is consumed once.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from recsys.events.v1 import interaction_pb2
from scripts.localstack.components import MlflowServer, TansuBroker
from services.cli.ingest import stream_events
from services.data.loaders import read_movielens
from tests.integration.ingest.support import read_topic, start_ingest
from tests.integration.trainer.support import (
    ML100K_EVENTS,
    Ingested,
    Trainer,
    start_trainer,
    stop_trainer,
    store_rows,
    trainer_settings,
    wait_for,
)


@pytest.fixture(scope="session")
def ml100k_topic(kafka: TansuBroker, ml100k_path: Path) -> Ingested:
    """ml-100k streamed through a real IngestService (in-process, port 0)."""
    topic = f"trainer-ml100k-{uuid.uuid4().hex[:8]}"

    async def ingest() -> None:
        service = await start_ingest(kafka.bootstrap, topic)
        try:
            # A blocking client: in a thread, so this loop keeps serving the ingest server.
            summary = await asyncio.to_thread(stream_events, read_movielens(ml100k_path, "100k"),
                                              target=service.target, timeout_s=300)
        finally:
            await service.stop()
        assert summary.error is None and summary.accepted == ML100K_EVENTS, summary

    asyncio.run(ingest())
    records = read_topic(kafka.bootstrap, topic)
    highwater: dict[int, int] = {}
    for record in records:
        highwater[record.partition] = max(highwater.get(record.partition, 0), record.offset + 1)
    event_ids = frozenset(interaction_pb2.Interaction.FromString(r.value).event_id
                          for r in records)
    assert len(event_ids) == ML100K_EVENTS
    return Ingested(topic, event_ids, highwater)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def trainer(kafka: TansuBroker, mlflow_server: MlflowServer, ml100k_topic: Ingested,
                  tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Trainer]:
    """A trainer that has consumed all of ml-100k."""
    data_dir = tmp_path_factory.mktemp("trainer")
    started = await start_trainer(
        trainer_settings(kafka, mlflow_server, ml100k_topic.topic, data_dir))
    await asyncio.to_thread(wait_for, lambda: store_rows(data_dir) == ML100K_EVENTS,
                            timeout=120, what="consuming ml-100k")
    yield started
    await stop_trainer(started)
