"""The replicas of a running local stack as Envoy and supervisord see them: restart one the way
a rolling update does, and wait until it serves again, to Envoy too."""

from __future__ import annotations

import re

from scripts.localstack.readiness import healthy_in_envoy, serving, stack_client_tls
from scripts.localstack.supervisor import Supervisor
from services.core.names import SERVICE_NAMES
from tests.support.local_stack import Stack
from tests.support.polling import eventually


def address(stack: Stack, program: str) -> str:
    """The gRPC address of a program ("recommender-2" → endpoints' recommender_2_grpc)."""
    return stack.endpoints[f"{program.replace('-', '_')}_grpc"]


def replica_count(stack: Stack, service: str) -> int:
    return sum(re.fullmatch(rf"{service}(_\d+)?_grpc", name) is not None
               for name in stack.endpoints)


def wait_serving(stack: Stack, program: str, timeout: float = 120.0) -> None:
    """Until the program's replica says SERVING and Envoy finds every replica of its service
    healthy."""
    service = program.split("-", maxsplit=1)[0]
    target = address(stack, program)
    tls = stack_client_tls(stack.security)
    hosts = replica_count(stack, service)
    eventually(lambda: serving(target, SERVICE_NAMES[service], tls=tls)
               and healthy_in_envoy(stack.endpoints["envoy_admin"], service, hosts),
               timeout=timeout, what=f"{program} serving, and healthy to Envoy")


def rolling_restart(stack: Stack, program: str) -> None:
    """As a rolling update replaces a pod: SIGTERM (it drains and exits), start the new one,
    wait until it is ready."""
    Supervisor(stack.state).restart(program)
    wait_serving(stack, program)
