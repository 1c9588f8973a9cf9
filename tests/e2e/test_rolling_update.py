"""A rolling update on the local stack, two replicas of ingest and of the recommender behind
Envoy: each replica in turn gets SIGTERM, drains and exits, a new one starts, and the next waits
until it is ready, while a client calls Recommend and CreateInteraction through Envoy. No call
fails, and every event ingest acknowledged is on the topic."""

from __future__ import annotations

import re
from collections.abc import Iterator

import grpc
import pytest

from recsys.events.v1 import interaction_pb2
from scripts.localstack.supervisor import Supervisor
from scripts.localstack.traffic import Traffic
from services.cli.token import mint_token
from services.core.tls import ClientTLS
from tests.support.local_stack import Stack
from tests.support.polling import eventually
from tests.support.replicas import rolling_restart, wait_serving
from tests.support.topics import read_topic

pytestmark = pytest.mark.e2e

REPLICAS = ("ingest", "ingest-2", "recommender", "recommender-2")


@pytest.fixture
def edge_channel(stack: Stack) -> Iterator[grpc.Channel]:
    """Envoy's TLS listener with a token of its own (its own rate-limit buckets)."""
    token = mint_token(["ingest:write", "recommend:read"],
                       key_file=stack.security["token_signing_key"], subject="rolling-update")
    tls = ClientTLS(ca_file=stack.security["ca_file"], token=token)
    with grpc.secure_channel(stack.endpoints["envoy_grpc"], tls.credentials()) as channel:
        yield channel


def test_a_rolling_restart_fails_no_call_and_loses_no_event(
    stack: Stack, edge_channel: grpc.Channel
) -> None:
    for program in REPLICAS:
        wait_serving(stack, program)
    with Traffic(edge_channel, recommend_per_s=40, interactions_per_s=10,
                 run="rolling") as traffic:
        report = traffic.report
        for program in REPLICAS:
            before = report.count(ok=True)
            rolling_restart(stack, program)
            # Traffic went on while the replica was replaced.
            eventually(lambda b=before: report.count(ok=True) > b + 20, timeout=60,
                       what=f"calls answered across the restart of {program}")
    assert report.count("Recommend", ok=True) > 0
    assert report.count("CreateInteraction", ok=True) > 0
    assert not report.failed, report.failed
    # Rolling restarts are stops and starts on purpose: supervisord counted no crash, and
    # each old replica drained with no call cut short.
    assert not set(REPLICAS) & Supervisor(stack.state).restarts().keys()
    for program in REPLICAS:
        drains = re.findall(r"drained cut_short=(\d+)",
                            (stack.state / "logs" / f"{program}.log").read_text())
        assert drains and set(drains) == {"0"}, (program, drains)

    on_topic = {interaction_pb2.Interaction.FromString(record.value).event_id
                for record in read_topic(stack.endpoints["kafka_bootstrap"], "interactions")}
    lost = [event_id for event_id in report.acknowledged if event_id not in on_topic]
    assert not lost, f"{len(lost)} acknowledged events are not on the topic"

