"""SIGTERM to `python -m services.ingest` in the middle of a client stream, as Kubernetes stops a
pod: health goes NOT_SERVING first, the stream completes or ends UNAVAILABLE with an
IngestFailure that says what was published, every event it acknowledged is on the topic, and
the process exits 0 with no call cut short."""

from __future__ import annotations

import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from recsys.events.v1 import interaction_pb2
from recsys.ingest.v1 import ingest_pb2
from scripts.localstack.components import TansuBroker
from services.cli.ingest import stream_events
from services.data.synthetic import SyntheticData, SyntheticSpec
from tests.support.polling import eventually
from tests.support.service_process import NOT_SERVING, SERVING, HealthWatch, LoggedService
from tests.support.topics import read_topic

pytestmark = pytest.mark.integration

SPEC = SyntheticSpec(users=500, items=300, events=300_000, seed=14)


def test_sigterm_mid_stream_publishes_every_acknowledged_event(
    kafka: TansuBroker, tmp_path: Path
) -> None:
    topic = f"drain-{uuid.uuid4().hex[:8]}"
    ingest = LoggedService(tmp_path, "ingest", environ={
        "RECSYS_KAFKA_BOOTSTRAP": kafka.bootstrap, "RECSYS_KAFKA_TOPIC": topic})
    ingest.start().wait_ready(60)
    try:
        with HealthWatch(ingest.target, ingest.service) as health, \
                ThreadPoolExecutor(1) as pool:
            load = pool.submit(stream_events, SyntheticData(SPEC).events(),
                               target=ingest.target, timeout_s=300)
            eventually(lambda: ingest.metric("recsys_ingest_events_total",
                                             outcome="accepted") > 0,
                       timeout=60, what="the broker acknowledging the stream's first events")
            assert not load.done(), "the stream ended before the signal"
            assert ingest.terminate() == 0
            summary = load.result()
        assert health.statuses[0] == SERVING and health.statuses[-1] == NOT_SERVING
    finally:
        ingest.stop()

    # Health went NOT_SERVING (then "draining" is logged) before the stream was stopped, and
    # the grace period cut no call short.
    messages = ingest.messages()
    assert messages.index("draining") < messages.index("drained") < messages.index("stopped")
    assert ingest.last("drained")["cut_short"] == 0
    if summary.error is None:
        failure = ingest_pb2.IngestFailure(accepted_count=summary.accepted)
        assert summary.accepted == SPEC.events
    else:
        assert summary.error.startswith("UNAVAILABLE: the service is shutting down"), summary
        assert summary.failure is not None, "a stopped stream must say what was published"
        failure = summary.failure
        assert messages.index("draining") < messages.index(
            "stream stopped: the service is shutting down")

    # The stream took in events [0, taken) in order and published all but the listed ones.
    missing = set(failure.not_accepted_indexes)
    taken = failure.accepted_count + len(missing)
    acknowledged = {f"syn-{SPEC.seed}-{i}" for i in range(taken) if i not in missing}
    assert len(acknowledged) == failure.accepted_count > 0
    on_topic = Counter(interaction_pb2.Interaction.FromString(record.value).event_id
                       for record in read_topic(kafka.bootstrap, topic))
    assert not acknowledged - on_topic.keys(), "acknowledged events missing from the topic"
    assert max(on_topic.values()) == 1, "an event on the topic twice"
