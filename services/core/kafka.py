"""kafka-python client settings shared by every producer and consumer in the mesh.

The values come from DESIGN.md's known traps: the local broker (Tansu) holds a group join
for session_timeout/2, so sessions are short; ListOffsets(latest) is wrong there, so nothing
here resets to "latest".
"""

from __future__ import annotations

from typing import Any

CLIENT_ID_PREFIX = "recsys"


def producer_config(bootstrap: str, *, client_id: str) -> dict[str, Any]:
    """An idempotent, acks=all producer: an acknowledged event is never lost or duplicated."""
    return {
        "bootstrap_servers": bootstrap,
        "client_id": f"{CLIENT_ID_PREFIX}-{client_id}",
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 5,
        "batch_size": 256 * 1024,
        "max_in_flight_requests_per_connection": 5,
        "request_timeout_ms": 5_000,
        "delivery_timeout_ms": 15_000,
        "max_block_ms": 5_000,
        "retry_backoff_ms": 100,
        "reconnect_backoff_max_ms": 2_000,
    }


def consumer_config(bootstrap: str, *, group_id: str, client_id: str) -> dict[str, Any]:
    """A group consumer that commits offsets itself, only after its work is durable."""
    return {
        "bootstrap_servers": bootstrap,
        "group_id": group_id,
        "client_id": f"{CLIENT_ID_PREFIX}-{client_id}",
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "session_timeout_ms": 6_000,
        "heartbeat_interval_ms": 1_000,
        "max_poll_interval_ms": 300_000,
        "request_timeout_ms": 10_000,
        "retry_backoff_ms": 200,
        "reconnect_backoff_max_ms": 2_000,
    }
