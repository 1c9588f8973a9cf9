"""The whole local stack, started as the README starts it, with the main job run on it: one
for the session (tests/support/local_stack.py), and clients of it; and one with two replicas
of ingest and of the recommender behind Envoy, for the tests that restart and kill its parts."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from scripts.mlflow_users import TRAINER
from services.cli.token import mint_token
from services.core.tls import ClientTLS
from tests.support.artifacts import small_artifact
from tests.support.clients import Rest, Stubs, stubs_for
from tests.support.local_stack import Stack, local_stack
from tests.support.model_registry import publish
from tests.support.replicas import wait_serving


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with local_stack(tmp_path_factory.mktemp("local-stack")) as running:
        yield running


@pytest.fixture(scope="session")
def replicated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """`up --replicas 2 --no-job`, with a champion registered for its recommenders to serve:
    the tests that restart and kill its parts leave it serving, as they found it."""
    state = tmp_path_factory.mktemp("replicated-stack")
    with local_stack(state, "--replicas", "2", "--no-job") as running:
        with pytest.MonkeyPatch.context() as patch:  # signed in as the trainer signs in
            passwords = json.loads((state / "mlflow" / "users.json").read_text())
            patch.setenv("MLFLOW_TRACKING_USERNAME", TRAINER)
            patch.setenv("MLFLOW_TRACKING_PASSWORD", passwords[TRAINER])
            publish(running.endpoints["mlflow_ui"], "recsys-mf",
                    small_artifact(n_users=2000), state / "models")
        for program in ("ingest", "ingest-2", "recommender", "recommender-2"):
            wait_serving(running, program)
        yield running


@pytest.fixture
def replicated_edge(replicated: Stack) -> Iterator[grpc.Channel]:
    """Envoy's TLS listener of the replicated stack, with a token for ingest and Recommend."""
    token = mint_token(["ingest:write", "recommend:read"],
                       key_file=replicated.security["token_signing_key"], subject="replicated")
    tls = ClientTLS(ca_file=replicated.security["ca_file"], token=token)
    with grpc.secure_channel(replicated.endpoints["envoy_grpc"], tls.credentials()) as channel:
        yield channel


@pytest.fixture(scope="session")
def token(stack: Stack) -> str:
    """A caller allowed everything: ingest, recommend and admin routes."""
    return mint_token(["ingest:write", "recommend:read", "admin"],
                      key_file=stack.security["token_signing_key"], subject="e2e")


@pytest.fixture(scope="session")
def rest(stack: Stack, token: str) -> Rest:
    return Rest(stack.port("rest_base_url"), ca=Path(stack.security["ca_file"]), token=token)


@pytest.fixture(scope="session")
def direct(stack: Stack) -> Iterator[Stubs]:
    """Stubs on each service's own port, with the admin's client certificate (mutual TLS)."""
    security = stack.security
    tls = ClientTLS(ca_file=security["ca_file"], cert_file=security["client_cert_file"],
                    key_file=security["client_key_file"])
    with stubs_for({name: stack.endpoints[f"{name}_grpc"]
                    for name in ("ingest", "trainer", "recommender")},
                   tls.credentials()) as stubs:
        yield stubs


@pytest.fixture(scope="session")
def edge(stack: Stack, token: str) -> Iterator[Stubs]:
    """Stubs through Envoy's TLS listener, the same address REST uses, with the token."""
    tls = ClientTLS(ca_file=stack.security["ca_file"], token=token)
    with stubs_for(dict.fromkeys(("ingest", "trainer", "recommender"),
                                 stack.endpoints["envoy_grpc"]), tls.credentials()) as stubs:
        yield stubs
