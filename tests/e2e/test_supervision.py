"""The local stack supervises as Kubernetes would: kill -9 of Redis and of one recommender
replica under Recommend load through Envoy fails no call, each comes back on its own, and each
restart is counted and printed, while everything else runs on."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from scripts.localstack.supervisor import Supervisor
from scripts.localstack.traffic import Traffic
from services.cli.token import mint_token
from services.core.tls import ClientTLS
from tests.support.local_stack import Stack
from tests.support.polling import eventually
from tests.support.replicas import wait_serving

pytestmark = pytest.mark.e2e

KILLED = ("redis", "recommender-2")


@pytest.fixture
def edge_channel(stack: Stack) -> Iterator[grpc.Channel]:
    token = mint_token(["ingest:write", "recommend:read"],
                       key_file=stack.security["token_signing_key"], subject="supervision")
    tls = ClientTLS(ca_file=stack.security["ca_file"], token=token)
    with grpc.secure_channel(stack.endpoints["envoy_grpc"], tls.credentials()) as channel:
        yield channel


def test_killed_components_come_back_counted_and_no_call_fails(
    stack: Stack, edge_channel: grpc.Channel
) -> None:
    control = Supervisor(stack.state)
    wait_serving(stack, "recommender-2")
    before = control.restarts()
    others = {name: info["pid"] for name, info in control.processes().items()
              if name not in KILLED}
    with Traffic(edge_channel, recommend_per_s=40, interactions_per_s=5,
                 run="supervision") as traffic:
        for program in KILLED:
            answered = traffic.report.count(ok=True)
            control.kill(program)
            eventually(lambda p=program: control.restarts().get(p, 0) == before.get(p, 0) + 1,
                       timeout=30, what=f"the restart of {program} counted")
            eventually(lambda a=answered: traffic.report.count(ok=True) > a + 20, timeout=60,
                       what=f"calls answered after {program} was killed")
        wait_serving(stack, "recommender-2")  # it loaded the champion again
    assert not traffic.report.failed, traffic.report.failed
    assert {name: info["pid"] for name, info in control.processes().items()
            if name not in KILLED} == others, "only the killed programs restarted"
    printed = stack.output()
    for program in KILLED:
        assert f"{program} restarted ({control.restarts()[program]} so far)" in printed
