"""The whole local stack, started the way the README starts it (`python -m
scripts.localstack.up`, what `scripts/run.sh` runs after set-up), on free ports and in a
temporary state directory so that it can run beside a developer's own stack."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.support.paths import REPO
from tests.support.polling import eventually

READY_LINE = "serving until Ctrl-C"
START_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class Stack:
    endpoints: dict[str, str]
    #: <state>/security.json: the CA, the token signing key (and client certificate with mTLS).
    security: dict[str, Any]
    log: Path
    #: Its state directory: supervisord's socket, restarts.json, logs/.
    state: Path

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
    def serving() -> bool:
        output = log.read_text(errors="replace")
        if process.poll() is not None:
            tail = "\n".join(output.splitlines()[-40:])
            pytest.fail(f"the local stack exited ({process.returncode}):\n{tail}")
        return READY_LINE in output

    eventually(serving, timeout=START_TIMEOUT_S, what="the local stack serving", interval=1)


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
    """`python -m scripts.localstack.up --free-ports OPTIONS`, from start to clean stop: once
    it has run the main job and says it is serving, until SIGTERM (as Ctrl-C) stopped it with
    nothing left listening."""
    log = state / "up.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "scripts.localstack.up", "--free-ports",
             "--state-dir", str(state), *options],
            cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_serving(process, log)
        running = Stack(json.loads((state / "endpoints.json").read_text()),
                        json.loads((state / "security.json").read_text()), log, state)
        yield running
    finally:
        _stop(process)
    assert process.returncode == 0, log.read_text(errors="replace")[-4000:]
    left = [port for port in running.listening_ports() if _listening(port)]
    assert not left, f"still listening after the stack stopped: {left}"
