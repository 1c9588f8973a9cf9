"""Clients of the mesh as its users call it: REST/JSON through Envoy, and gRPC stubs."""

from __future__ import annotations

import contextlib
import http.client
import json
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from recsys.ingest.v1 import ingest_pb2_grpc
from recsys.recommender.v1 import recommender_pb2_grpc
from recsys.trainer.v1 import trainer_pb2_grpc
from scripts.localstack.components import HOST
from scripts.localstack.envoy import Envoy
from scripts.localstack.pki import Pki
from services.core.tls import ClientTLS


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any  # the parsed JSON
    headers: dict[str, str]


class Rest:
    """A small JSON client for Envoy's REST API (http.client: no proxy lookups).

    With `ca`, HTTPS trusting that CA; with `token`, every request carries it as a bearer token.
    """

    def __init__(self, port: int, *, ca: Path | None = None, token: str | None = None) -> None:
        self.port = port
        self.ca = ca
        self.token = token

    def with_token(self, token: str | None) -> Rest:
        """The same client with another token (None: none)."""
        return Rest(self.port, ca=self.ca, token=token)

    def connection(self) -> http.client.HTTPConnection:
        if self.ca is None:
            return http.client.HTTPConnection(HOST, self.port, timeout=30)
        context = ssl.create_default_context(cafile=str(self.ca))
        return http.client.HTTPSConnection(HOST, self.port, timeout=30, context=context)

    def request(self, method: str, path: str, body: Any = None, *, raw: bytes | None = None,
                headers: dict[str, str] | None = None) -> Reply:
        data = raw if raw is not None else None if body is None else json.dumps(body).encode()
        conn = self.connection()
        try:
            sent = {"content-type": "application/json"} if data is not None else {}
            if self.token is not None:
                sent["authorization"] = f"Bearer {self.token}"
            conn.request(method, path, body=data, headers={**sent, **(headers or {})})
            response = conn.getresponse()
            payload = response.read()
            content_type = response.getheader("content-type", "")
            assert content_type.startswith("application/json"), (response.status, payload)
            return Reply(response.status, json.loads(payload),
                         {k.lower(): v for k, v in response.getheaders()})
        finally:
            conn.close()

    def get(self, path: str, **kwargs: Any) -> Reply:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, body: Any = None, **kwargs: Any) -> Reply:
        return self.request("POST", path, {} if body is None else body, **kwargs)


@dataclass(frozen=True)
class Stubs:
    ingest: ingest_pb2_grpc.IngestServiceStub
    trainer: trainer_pb2_grpc.TrainerServiceStub
    recommender: recommender_pb2_grpc.RecommenderServiceStub

    @classmethod
    def of(cls, channels: dict[str, grpc.Channel]) -> Stubs:
        return cls(ingest_pb2_grpc.IngestServiceStub(channels["ingest"]),
                   trainer_pb2_grpc.TrainerServiceStub(channels["trainer"]),
                   recommender_pb2_grpc.RecommenderServiceStub(channels["recommender"]))


@contextlib.contextmanager
def stubs_for(targets: dict[str, str],
              credentials: grpc.ChannelCredentials | None = None) -> Iterator[Stubs]:
    """Stubs on a channel per service name (plaintext without `credentials`), closed after."""
    channels = {name: grpc.insecure_channel(target) if credentials is None
                else grpc.secure_channel(target, credentials)
                for name, target in targets.items()}
    try:
        yield Stubs.of(channels)
    finally:
        for channel in channels.values():
            channel.close()


def envoy_channel(envoy: Envoy, pki: Pki, token: str | None) -> grpc.Channel:
    """A gRPC channel to Envoy's TLS listener, trusting the PKI's CA, sending `token`."""
    tls = ClientTLS(ca_file=str(pki.ca_cert), token=token)
    return grpc.secure_channel(envoy.target, tls.credentials())
