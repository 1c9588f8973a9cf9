"""A rolling update on the local stack, two replicas of ingest and of the recommender behind
Envoy: each replica in turn gets SIGTERM, drains and exits, a new one starts, and the next waits
until it is ready, while a client calls Recommend and CreateInteraction through Envoy. No call
fails, and every event ingest acknowledged is on the topic."""

from __future__ import annotations

import re

import grpc
import pytest

from recsys.events.v1 import interaction_pb2
from scripts.localstack.supervisor import Supervisor
from scripts.localstack.traffic import Traffic
from tests.support.local_stack import Stack
from tests.support.polling import eventually
from tests.support.replicas import rolling_restart, wait_serving
from tests.support.topics import read_topic

pytestmark = pytest.mark.e2e

REPLICAS = ("ingest", "ingest-2", "recommender", "recommender-2")


def test_a_rolling_restart_fails_no_call_and_loses_no_event(
    replicated: Stack, replicated_edge: grpc.Channel
) -> None:
    for program in REPLICAS:
        wait_serving(replicated, program)
    with Traffic(replicated_edge, recommend_per_s=40, interactions_per_s=10,
                 run="rolling") as traffic:
        report = traffic.report
        for program in REPLICAS:
            before = report.count(ok=True)
            rolling_restart(replicated, program)
            # Traffic went on while the replica was replaced.
            eventually(lambda b=before: report.count(ok=True) > b + 20, timeout=60,
                       what=f"calls answered across the restart of {program}")
    assert report.count("Recommend", ok=True) > 0
    assert report.count("CreateInteraction", ok=True) > 0
    assert not report.failed, report.failed
    # Rolling restarts are stops and starts on purpose: supervisord counted no crash, and
    # each old replica drained with no call cut short.
    assert not set(REPLICAS) & Supervisor(replicated.state).restarts().keys()
    for program in REPLICAS:
        drains = re.findall(r"drained cut_short=(\d+)",
                            (replicated.state / "logs" / f"{program}.log").read_text())
        assert drains and set(drains) == {"0"}, (program, drains)

    on_topic = {interaction_pb2.Interaction.FromString(record.value).event_id
                for record in read_topic(replicated.endpoints["kafka_bootstrap"], "interactions")}
    lost = [event_id for event_id in report.acknowledged if event_id not in on_topic]
    assert not lost, f"{len(lost)} acknowledged events are not on the topic"

