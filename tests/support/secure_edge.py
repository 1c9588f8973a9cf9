"""A secured Envoy (TLS, tokens, scopes, rate limits, mutual TLS upstream) in front of the probe
service, for the edge's security tests: each module chooses its route policies."""

from __future__ import annotations

import json
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import grpc

from scripts.localstack.components import HOST, free_port
from scripts.localstack.envoy import Envoy
from scripts.localstack.pki import Pki
from services.core.config import ServerSettings
from services.core.server import RunningServer
from services.edge.policy import PER_ADDRESS, RateLimit, RoutePolicy
from services.edge.profiles import pki_security
from services.edge.render import ADMIN_PATHS
from tests.support.clients import Rest
from tests.support.grpc_calls import client_tls, secure_channel
from tests.support.loop_thread import LoopThread
from tests.support.probe_app import ProbeApp


@dataclass(frozen=True)
class SecureEdge:
    """Envoy with `pki`'s security; the recommender upstream is the probe (mutual TLS), nothing
    listens at ingest's and trainer's addresses (a call that gets past the edge there ends as
    503 / UNAVAILABLE)."""

    envoy: Envoy
    probe: RunningServer
    pki: Pki

    def rest(self, token: str | None) -> Rest:
        return Rest(self.envoy.port, ca=self.pki.ca_cert, token=token)

    def channel(self, token: str | None) -> grpc.Channel:
        return secure_channel(self.envoy.target, client_tls(self.pki, token=token))

    def token(self, *scopes: str, **options: Any) -> str:
        """A token of its own subject (so of its own rate-limit bucket) unless told."""
        options.setdefault("subject", f"client-{uuid.uuid4().hex[:8]}")
        return self.pki.mint_token(scopes, **options)

    def stats(self) -> str:
        url = f"{self.envoy.admin_url}/stats/prometheus"
        with urllib.request.urlopen(url, timeout=5) as reply:
            text: str = reply.read().decode()
        return text

    def heap_bytes(self) -> int:
        """Envoy's heap now (the admin endpoint's /memory, live; the stats gauge lags)."""
        with urllib.request.urlopen(f"{self.envoy.admin_url}/memory", timeout=5) as reply:
            return int(json.loads(reply.read())["heap_size"])

    def stat(self, line_start: str) -> float:
        """The value of the first Prometheus line that starts with `line_start` (0 if none)."""
        for line in self.stats().splitlines():
            if line.startswith(line_start):
                return float(line.rsplit(" ", 1)[1])
        return 0.0


@contextmanager
def secure_edge(pki: Pki, directory: Path, *, policies: Mapping[str, RoutePolicy],
                per_address: RateLimit = PER_ADDRESS) -> Iterator[SecureEdge]:
    loop = LoopThread()
    probe = loop.serve(ProbeApp(), ServerSettings(
        tls_cert_file=str(pki.server_cert), tls_key_file=str(pki.server_key),
        tls_ca_file=str(pki.ca_cert)))
    dead = f"{HOST}:{free_port()}"
    security = replace(pki_security(pki.directory, mutual_tls=True, policies=policies),
                       per_address=per_address)
    try:
        with Envoy(directory, ingest=dead, trainer=dead, recommender=f"{HOST}:{probe.port}",
                   security=security, admin_paths=(*ADMIN_PATHS, "/memory")) as envoy:
            yield SecureEdge(envoy, probe, pki)
    finally:
        loop.run(probe.stop(1.0))
        loop.close()
