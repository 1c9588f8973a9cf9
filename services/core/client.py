"""Client defaults in one place: deadlines on every call, retries only on UNAVAILABLE."""

from __future__ import annotations

import json

import grpc

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


def aio_channel(target: str) -> grpc.aio.Channel:
    """An insecure asyncio channel with the project's retry policy; use `async with`."""
    return grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)


def channel(target: str) -> grpc.Channel:
    """A blocking channel with the project's retry policy; use `with`."""
    return grpc.insecure_channel(target, options=CHANNEL_OPTIONS)
