from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from scripts.localstack.components import TansuBroker
from tests.integration.ingest.support import Ingest, start_ingest


@pytest.fixture
async def ingest(kafka: TansuBroker) -> AsyncIterator[Ingest]:
    """An ingest server on the shared memory broker, with a topic of its own."""
    running = await start_ingest(kafka.bootstrap)
    yield running
    await running.stop()
