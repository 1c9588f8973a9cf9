"""Client defaults in one place: deadlines on every call, retries only on UNAVAILABLE, TLS.

Channels are plaintext unless given a `ClientTLS`, or, when given none, unless the
RECSYS_CLI_TLS_* / RECSYS_CLI_TOKEN variables describe one (`ClientTLS.from_env`): that is how
the CLI reaches services that require mutual TLS, or Envoy's TLS listener with a token.
"""

from __future__ import annotations

import json

import grpc

from services.core.tls import ClientTLS

DEFAULT_TIMEOUT_S = 10.0

# Retried transparently by gRPC, with backoff, for every method of every service.
_SERVICE_CONFIG = json.dumps({
    "methodConfig": [{
        "name": [{}],
        "retryPolicy": {
            "maxAttempts": 4,
            "initialBackoff": "0.1s",
            "maxBackoff": "2s",
            "backoffMultiplier": 2,
            "retryableStatusCodes": ["UNAVAILABLE"],
        },
    }],
})

CHANNEL_OPTIONS = [
    ("grpc.service_config", _SERVICE_CONFIG),
    ("grpc.enable_retries", 1),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
    ("grpc.max_send_message_length", 16 * 1024 * 1024),
]


def aio_channel(target: str, *, tls: ClientTLS | None = None) -> grpc.aio.Channel:
    """An asyncio channel with the project's retry policy; use `async with`.

    `tls` None: from the environment, plaintext when it sets nothing.
    """
    tls = tls or ClientTLS.from_env()
    if tls is None:
        return grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
    return grpc.aio.secure_channel(target, tls.credentials(),
                                   options=CHANNEL_OPTIONS + tls.options())


def channel(target: str, *, tls: ClientTLS | None = None) -> grpc.Channel:
    """A blocking channel with the project's retry policy; use `with`.

    `tls` None: from the environment, plaintext when it sets nothing.
    """
    tls = tls or ClientTLS.from_env()
    if tls is None:
        return grpc.insecure_channel(target, options=CHANNEL_OPTIONS)
    return grpc.secure_channel(target, tls.credentials(), options=CHANNEL_OPTIONS + tls.options())
