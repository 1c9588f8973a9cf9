"""The ingest image, run as its workload against the real broker: health on the plaintext
health port, an event published through it, confinement, and SIGTERM."""

from __future__ import annotations

import uuid

import pytest

from recsys.events.v1 import interaction_pb2
from recsys.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from scripts.localstack.components import TansuBroker
from scripts.localstack.pki import Pki
from tests.support.containers import CONFINED, running
from tests.support.events import rating_event
from tests.support.topics import read_topic

pytestmark = pytest.mark.images


def test_the_ingest_image_publishes_an_event_and_stops_on_sigterm(
        images: dict[str, str], kafka: TansuBroker, pki: Pki) -> None:
    topic = f"image-ingest-{uuid.uuid4().hex[:8]}"
    with running("ingest", images["ingest"], pki,
                 env={"RECSYS_KAFKA_BOOTSTRAP": kafka.bootstrap,
                      "RECSYS_KAFKA_TOPIC": topic}) as ingest:
        ingest.wait_serving()
        with ingest.channel() as channel:
            answer = ingest_pb2_grpc.IngestServiceStub(channel).CreateInteraction(
                ingest_pb2.CreateInteractionRequest(interaction=rating_event(1)), timeout=10)
        published = [interaction_pb2.Interaction.FromString(record.value).event_id
                     for record in read_topic(kafka.bootstrap, topic)]
        assert published == [answer.event_id]
        assert ingest.confinement() == CONFINED
        assert ingest.terminate() == 0, ingest.logs()
        assert "stopped" in ingest.logged()
