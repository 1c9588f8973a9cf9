"""The local stack speaks mutual TLS between every client and service by default: the main
job passes end to end, and each service refuses a client without a mesh certificate."""

from __future__ import annotations

import re
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.core.tls import ClientTLS
from tests.support.local_stack import Stack

pytestmark = pytest.mark.e2e

SERVICES = ("ingest", "trainer", "recommender")


def health(target: str, credentials: grpc.ChannelCredentials | None) -> int:
    with (grpc.insecure_channel(target) if credentials is None
          else grpc.secure_channel(target, credentials)) as channel:
        return health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5).status


def test_the_main_job_passes_with_mutual_tls(stack: Stack) -> None:
    assert stack.security["mtls"] is True
    output = stack.output()
    assert re.search(r"model version \d+: promoted to champion", output)
    assert re.search(r'^\{"items":\[\{"itemId"', output, re.M), output[-3000:]


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_wants_a_client_certificate(stack: Stack, service: str) -> None:
    target = stack.endpoints[f"{service}_grpc"]
    security = stack.security
    with_certificate = ClientTLS(ca_file=security["ca_file"],
                                 cert_file=security["client_cert_file"],
                                 key_file=security["client_key_file"])
    assert health(target, with_certificate.credentials()) == (
        health_pb2.HealthCheckResponse.SERVING)
    ca = Path(security["ca_file"]).read_bytes()
    for refused in (grpc.ssl_channel_credentials(root_certificates=ca), None):
        with pytest.raises(grpc.RpcError) as caught:
            health(target, refused)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
