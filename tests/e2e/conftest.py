"""The whole local stack, started as the README starts it, with the main job run on it: one
for the session (tests/support/local_stack.py), and clients of it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from services.cli.token import mint_token
from services.core.tls import ClientTLS
from tests.support.clients import Rest, Stubs, stubs_for
from tests.support.local_stack import Stack, local_stack


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with local_stack(tmp_path_factory.mktemp("local-stack")) as running:
        yield running


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
