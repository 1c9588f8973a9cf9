"""The whole local stack, started the way the README starts it, with the main job run on it.

`python -m scripts.localstack.up` is what `scripts/run.sh` (the README's first command) runs
after set-up; here it gets free ports and a temporary state directory so it can run beside
a developer's own stack. The session waits until the stack has run the main job and says it
is serving, hands the tests its endpoints, and at the end stops it with SIGTERM, as Ctrl-C
would, and checks that nothing is left listening.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc
import pytest

from services.cli.token import mint_token
from services.core.tls import ClientTLS
from tests.conftest import REPO
from tests.integration.edge.conftest import Rest, Stubs

READY_LINE = "serving until Ctrl-C"
START_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class Stack:
    endpoints: dict[str, str]
    #: <state>/security.json: the CA, the token signing key (and client certificate with mTLS).
    security: dict[str, Any]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def port(self, name: str) -> int:
        """The port of an endpoint, whether it is written host:port or as a URL."""
        address = self.endpoints[name]
        port = urlsplit(address if "://" in address else f"//{address}").port
        assert port is not None, address
        return port

    def listening_ports(self) -> list[int]:
        return [self.port(name) for name in self.endpoints if name != "metrics"]


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _wait_serving(process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while READY_LINE not in log.read_text(errors="replace"):
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        if process.poll() is not None:
            pytest.fail(f"the local stack exited ({process.returncode}):\n{tail}")
        if time.monotonic() > deadline:
            pytest.fail(f"the local stack was not serving after {START_TIMEOUT_S:.0f} s:\n{tail}")
        time.sleep(1)


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(90)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        pytest.fail("the local stack did not stop within 90 s of SIGTERM")


@contextmanager
def local_stack(state: Path, *options: str) -> Iterator[Stack]:
    """`python -m scripts.localstack.up --free-ports OPTIONS`, from start to clean stop."""
    log = state / "up.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "scripts.localstack.up", "--free-ports",
             "--state-dir", str(state), *options],
            cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_serving(process, log)
        running = Stack(json.loads((state / "endpoints.json").read_text()),
                        json.loads((state / "security.json").read_text()), log)
        yield running
    finally:
        _stop(process)
    assert process.returncode == 0, log.read_text(errors="replace")[-4000:]
    left = [port for port in running.listening_ports() if _listening(port)]
    assert not left, f"still listening after the stack stopped: {left}"


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


def _stubs(targets: dict[str, str],
           credentials: grpc.ChannelCredentials | None = None) -> Iterator[Stubs]:
    channels = {name: grpc.insecure_channel(target) if credentials is None
                else grpc.secure_channel(target, credentials)
                for name, target in targets.items()}
    try:
        yield Stubs.of(channels)
    finally:
        for channel in channels.values():
            channel.close()


@pytest.fixture(scope="session")
def direct(stack: Stack) -> Iterator[Stubs]:
    """Stubs on each service's own port."""
    yield from _stubs({name: stack.endpoints[f"{name}_grpc"]
                       for name in ("ingest", "trainer", "recommender")})


@pytest.fixture(scope="session")
def edge(stack: Stack, token: str) -> Iterator[Stubs]:
    """Stubs through Envoy's TLS listener, the same address REST uses, with the token."""
    tls = ClientTLS(ca_file=stack.security["ca_file"], token=token)
    yield from _stubs(dict.fromkeys(("ingest", "trainer", "recommender"),
                                    stack.endpoints["envoy_grpc"]), tls.credentials())
