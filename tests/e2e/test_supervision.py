"""The local stack supervises as Kubernetes would: kill -9 of Redis and of one recommender
replica under Recommend load through Envoy fails no call, each comes back on its own, and each
restart is counted and printed, while everything else runs on."""

from __future__ import annotations

import grpc
import pytest

from scripts.localstack.supervisor import Supervisor
from scripts.localstack.traffic import Traffic
from tests.support.local_stack import Stack
from tests.support.polling import eventually
from tests.support.replicas import wait_serving

pytestmark = pytest.mark.e2e

KILLED = ("redis", "recommender-2")


def test_killed_components_come_back_counted_and_no_call_fails(
    replicated: Stack, replicated_edge: grpc.Channel
) -> None:
    control = Supervisor(replicated.state)
    wait_serving(replicated, "recommender-2")
    before = control.restarts()
    others = {name: info["pid"] for name, info in control.processes().items()
              if name not in KILLED}
    with Traffic(replicated_edge, recommend_per_s=40, interactions_per_s=5,
                 run="supervision") as traffic:
        for program in KILLED:
            answered = traffic.report.count(ok=True)
            control.kill(program)
            eventually(lambda p=program: control.restarts().get(p, 0) == before.get(p, 0) + 1,
                       timeout=30, what=f"the restart of {program} counted")
            eventually(lambda a=answered: traffic.report.count(ok=True) > a + 20, timeout=60,
                       what=f"calls answered after {program} was killed")
        wait_serving(replicated, "recommender-2")  # it loaded the champion again
    assert not traffic.report.failed, traffic.report.failed
    assert {name: info["pid"] for name, info in control.processes().items()
            if name not in KILLED} == others, "only the killed programs restarted"
    for program in KILLED:
        line = f"{program} restarted ({control.restarts()[program]} so far)"
        eventually(lambda line=line: line in replicated.output(), timeout=10,
                   what=f"up.py printing {line!r}")
