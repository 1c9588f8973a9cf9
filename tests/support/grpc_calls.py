"""gRPC calls with or without the mesh's TLS, and the status of a call that must fail."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from scripts.localstack.pki import Pki
from services.core.tls import ClientTLS


def client_tls(pki: Pki, *, cert: Pki | None = None, token: str | None = None) -> ClientTLS:
    """Trust `pki`'s CA; present `cert`'s client certificate (none when None)."""
    return ClientTLS(ca_file=str(pki.ca_cert),
                     cert_file=str(cert.client_cert) if cert else None,
                     key_file=str(cert.client_key) if cert else None, token=token)


def secure_channel(target: str, tls: ClientTLS) -> grpc.Channel:
    return grpc.secure_channel(target, tls.credentials(), options=tls.options())


def health_check(channel: grpc.Channel, service: str = "") -> Any:
    """grpc.health.v1 Check; raises grpc.RpcError when the call fails."""
    stub = health_pb2_grpc.HealthStub(channel)
    return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=3).status


def refused(call: Callable[[], Any]) -> grpc.StatusCode:
    """The status code of a call that must fail."""
    with pytest.raises(grpc.RpcError) as raised:
        call()
    code: grpc.StatusCode = raised.value.code()
    return code
