"""kafka-python client settings shared by every producer and consumer in the mesh.

The values come from DESIGN.md's known traps: the local broker (Tansu) holds a group join
for session_timeout/2, so sessions are short; ListOffsets(latest) is wrong there, so nothing
here resets to "latest".

Security: `KafkaSecurity` (from the RECSYS_KAFKA_SECURITY_PROTOCOL, _SASL_* and _SSL_*
settings every service has) adds TLS and SASL to a client's configuration. The local broker
speaks plaintext on loopback; a production Kafka is expected to ask for SASL_SSL (SCRAM, the
password from a Secret) or SSL with client certificates.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

from kafka import KafkaConsumer, TopicPartition

from services.core.settings import SettingsError

CLIENT_ID_PREFIX = "recsys"

Protocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
Mechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


@dataclass(frozen=True, kw_only=True)
class KafkaSecurity:
    """How a client authenticates to the brokers and protects the connection."""

    protocol: Protocol = "PLAINTEXT"
    sasl_mechanism: Mechanism = "SCRAM-SHA-512"
    sasl_username: str = ""
    sasl_password: str = ""
    ssl_ca_file: str = ""  # empty: the system's CAs
    ssl_cert_file: str = ""  # with ssl_key_file: a client certificate (SSL authentication)
    ssl_key_file: str = ""

    def __post_init__(self) -> None:
        sasl = self.protocol.startswith("SASL_")
        if sasl and not (self.sasl_username and self.sasl_password):
            raise SettingsError(f"RECSYS_KAFKA_SECURITY_PROTOCOL={self.protocol} needs "
                                "RECSYS_KAFKA_SASL_USERNAME and RECSYS_KAFKA_SASL_PASSWORD")
        if self.protocol == "SASL_PLAINTEXT" and self.sasl_mechanism == "PLAIN":
            raise SettingsError("SASL PLAIN over SASL_PLAINTEXT sends the password in clear: "
                                "use SASL_SSL or a SCRAM mechanism")
        if bool(self.ssl_cert_file) != bool(self.ssl_key_file):
            raise SettingsError("RECSYS_KAFKA_SSL_CERT_FILE and RECSYS_KAFKA_SSL_KEY_FILE go "
                                "together")
        if not self.protocol.endswith("SSL") and (self.ssl_ca_file or self.ssl_cert_file):
            raise SettingsError(f"RECSYS_KAFKA_SSL_* files need RECSYS_KAFKA_SECURITY_PROTOCOL "
                                f"SSL or SASL_SSL, not {self.protocol}")

    def __repr__(self) -> str:  # never print the password
        return (f"KafkaSecurity(protocol={self.protocol!r}, "
                f"sasl_mechanism={self.sasl_mechanism!r}, sasl_username={self.sasl_username!r})")

    def client_options(self) -> dict[str, Any]:
        """The kafka-python arguments (KafkaProducer, KafkaConsumer, KafkaAdminClient)."""
        options: dict[str, Any] = {"security_protocol": self.protocol}
        if self.protocol.endswith("SSL"):
            options["ssl_check_hostname"] = True
            for option, path in (("ssl_cafile", self.ssl_ca_file),
                                 ("ssl_certfile", self.ssl_cert_file),
                                 ("ssl_keyfile", self.ssl_key_file)):
                if path:
                    options[option] = path
        if self.protocol.startswith("SASL_"):
            options |= {"sasl_mechanism": self.sasl_mechanism,
                        "sasl_plain_username": self.sasl_username,
                        "sasl_plain_password": self.sasl_password}
        return options


PLAINTEXT = KafkaSecurity()


def producer_config(bootstrap: str, *, client_id: str,
                    security: KafkaSecurity = PLAINTEXT) -> dict[str, Any]:
    """An idempotent, acks=all producer: an acknowledged event is never lost or duplicated."""
    return {
        **security.client_options(),
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


def consumer_config(bootstrap: str, *, group_id: str | None, client_id: str,
                    security: KafkaSecurity = PLAINTEXT) -> dict[str, Any]:
    """A group consumer that commits offsets itself, only after its work is durable (without a
    group, None: a consumer that reads from the start and commits nothing)."""
    return {
        **security.client_options(),
        "bootstrap_servers": bootstrap,
        "group_id": group_id,
        "client_id": f"{CLIENT_ID_PREFIX}-{client_id}",
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "session_timeout_ms": 6_000,
        "heartbeat_interval_ms": 1_000,
        "max_poll_interval_ms": 300_000,
        # Up to ~80,000 events per partition per fetch, so one poll can fill a batch as large
        # as the trainer's (the default 1 MiB stops at ~10,000).
        "max_partition_fetch_bytes": 8 << 20,
        "request_timeout_ms": 10_000,
        "retry_backoff_ms": 200,
        "reconnect_backoff_max_ms": 2_000,
    }


def read_end_offsets(bootstrap: str, topic: str, *, security: KafkaSecurity = PLAINTEXT,
                     timeout_s: float = 10.0) -> dict[int, int]:
    """The end offset (the next offset to be written) of every partition of `topic`: the high
    watermark that a fetch response carries.

    Not ListOffsets(latest) alone: the local broker (Tansu) answers it with the last batch's
    base offset + 1 (DESIGN.md's known traps). That answer is still an offset inside the last
    batch (and exact on Apache Kafka), so a fetch from there is small and brings the true end.
    Raises KafkaError or TimeoutError when the broker does not answer within `timeout_s`.
    """
    config = consumer_config(bootstrap, group_id=None, client_id="offsets", security=security)
    consumer = KafkaConsumer(**config, fetch_max_wait_ms=100)
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        for tp, offset in consumer.end_offsets(assigned).items():
            consumer.seek(tp, max(offset - 1, 0))
        deadline = time.monotonic() + timeout_s
        while (missing := [tp for tp in assigned if consumer.highwater(tp) is None]):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no fetch answer for {topic} partitions "
                                   f"{[tp.partition for tp in missing]} in {timeout_s:g} s")
            consumer.poll(timeout_ms=200)
        return {tp.partition: int(consumer.highwater(tp)) for tp in assigned}
    finally:
        consumer.close(autocommit=False)


def read_committed_offsets(bootstrap: str, topic: str, group_id: str, *,
                           security: KafkaSecurity = PLAINTEXT) -> dict[int, int]:
    """The offset consumer group `group_id` has committed on each partition of `topic` (those
    without a commit are left out), read without joining the group."""
    consumer = KafkaConsumer(**consumer_config(bootstrap, group_id=group_id,
                                               client_id="committed", security=security))
    try:
        committed = {p: consumer.committed(TopicPartition(topic, p))
                     for p in sorted(consumer.partitions_for_topic(topic) or ())}
        return {p: int(offset) for p, offset in committed.items() if offset is not None}
    finally:
        consumer.close(autocommit=False)
