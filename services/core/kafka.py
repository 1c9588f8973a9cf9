"""Kafka client settings shared by every producer and consumer in the mesh.

Two clients: producers and admin clients are kafka-python's (`producer_config`,
`KafkaSecurity.client_options`); consumers are confluent-kafka's, librdkafka in C
(`consumer_config`, `KafkaSecurity.librdkafka_options`), which costs about a third of
kafka-python's CPU per consumed event.

The values come from DESIGN.md's known traps: the local broker (Tansu) holds a group join
for session_timeout/2, so sessions are short; ListOffsets(latest) is wrong there, so nothing
here resets to "latest".

Security: `KafkaSecurity` (from the RECSYS_KAFKA_SECURITY_PROTOCOL, _SASL_* and _SSL_*
settings every service has) adds TLS and SASL to a client's configuration. The local broker
speaks plaintext on loopback; a production Kafka is expected to ask for SASL_SSL (SCRAM, the
password from a Secret) or SSL with client certificates.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from services.core.settings import SettingsError

CLIENT_ID_PREFIX = "recsys"

#: Where librdkafka's own log lines go (a consumer's `logger` property), not raw stderr.
LIBRDKAFKA_LOG = logging.getLogger(__name__).getChild("librdkafka")

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
        """The kafka-python arguments (KafkaProducer, KafkaAdminClient)."""
        return self._options(_KAFKA_PYTHON)

    def librdkafka_options(self) -> dict[str, Any]:
        """The same, as librdkafka properties (confluent-kafka's Consumer)."""
        return self._options(_LIBRDKAFKA)

    def _options(self, names: _OptionNames) -> dict[str, Any]:
        options: dict[str, Any] = {names.protocol: self.protocol}
        if self.protocol.endswith("SSL"):
            options.update([names.hostname_check])
            files = (self.ssl_ca_file, self.ssl_cert_file, self.ssl_key_file)
            options |= {name: path for name, path in zip(names.files, files, strict=True)
                        if path}
        if self.protocol.startswith("SASL_"):
            options |= dict(zip(names.sasl, (self.sasl_mechanism, self.sasl_username,
                                             self.sasl_password), strict=True))
        return options


class _OptionNames(NamedTuple):
    """What one client calls the security settings."""

    protocol: str
    hostname_check: tuple[str, Any]  # the option and value that verify the broker's name
    files: tuple[str, str, str]  # CA, client certificate, client key
    sasl: tuple[str, str, str]  # mechanism, username, password


_KAFKA_PYTHON = _OptionNames(
    "security_protocol", ("ssl_check_hostname", True),
    ("ssl_cafile", "ssl_certfile", "ssl_keyfile"),
    ("sasl_mechanism", "sasl_plain_username", "sasl_plain_password"))
_LIBRDKAFKA = _OptionNames(
    "security.protocol", ("ssl.endpoint.identification.algorithm", "https"),
    ("ssl.ca.location", "ssl.certificate.location", "ssl.key.location"),
    ("sasl.mechanism", "sasl.username", "sasl.password"))


PLAINTEXT = KafkaSecurity()

# Consumer settings (DESIGN.md's known traps: Tansu holds a join for session_timeout/2).
SESSION_TIMEOUT_MS = 6_000
HEARTBEAT_INTERVAL_MS = 1_000
PARTITION_FETCH_BYTES = 8 << 20


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
    """A librdkafka group consumer that commits offsets itself, only after its work is durable
    (without a group, None: one that assigns itself partitions and commits nothing; librdkafka
    wants a group.id all the same, so it gets its client id, and never joins it).

    Nothing here reaches beyond the brokers the bootstrap and their advertised listeners name:
    no topic is created by asking for it, no metrics are pushed (KIP-714), and the SASL
    mechanisms offered never fetch tokens (no OAUTHBEARER/OIDC endpoint).
    """
    client = f"{CLIENT_ID_PREFIX}-{client_id}"
    return {
        **security.librdkafka_options(),
        "bootstrap.servers": bootstrap,
        "group.id": group_id or client,
        "client.id": client,
        "logger": LIBRDKAFKA_LOG,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "allow.auto.create.topics": False,
        "enable.metrics.push": False,
        "session.timeout.ms": SESSION_TIMEOUT_MS,
        "heartbeat.interval.ms": HEARTBEAT_INTERVAL_MS,
        "max.poll.interval.ms": 300_000,
        # Up to ~80,000 events per partition per fetch, so one poll can fill a batch as large
        # as the trainer's; at most 32 MiB fetched ahead of the handler.
        "max.partition.fetch.bytes": PARTITION_FETCH_BYTES,
        "queued.max.messages.kbytes": 32 * 1024,
        # A subscribed topic that does not exist yet is looked for again this often.
        "topic.metadata.refresh.interval.ms": 5_000,
        "socket.timeout.ms": 10_000,
        "retry.backoff.ms": 200,
        "reconnect.backoff.max.ms": 2_000,
    }


def read_end_offsets(bootstrap: str, topic: str, *, security: KafkaSecurity = PLAINTEXT,
                     timeout_s: float = 10.0) -> dict[int, int]:
    """The end offset (the next offset to be written) of every partition of `topic`: the high
    watermark that a fetch response carries.

    Not ListOffsets(latest) alone: the local broker (Tansu) answers it with the last batch's
    base offset + 1 (DESIGN.md's known traps). That answer is still an offset inside the last
    batch (and exact on Apache Kafka), so a fetch from there is small and brings the true end.
    Raises KafkaException or TimeoutError when the broker does not answer within `timeout_s`.
    """
    config = consumer_config(bootstrap, group_id=None, client_id="offsets", security=security)
    consumer = Consumer({**config, "fetch.wait.max.ms": 100})
    try:
        partitions = topic_partitions(consumer, topic, timeout_s=timeout_s)
        listed = [consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)[1]
                  for p in partitions]
        consumer.assign([TopicPartition(topic, p, max(end - 1, 0))
                         for p, end in zip(partitions, listed, strict=True)])
        deadline = time.monotonic() + timeout_s
        while (missing := [p for p in partitions if _cached_end(consumer, topic, p) < 0]):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no fetch answer for {topic} partitions {missing} in "
                                   f"{timeout_s:g} s")
            consumer.consume(num_messages=1_000, timeout=0.2)
        return {p: _cached_end(consumer, topic, p) for p in partitions}
    finally:
        consumer.close()


def read_committed_offsets(bootstrap: str, topic: str, group_id: str, *,
                           security: KafkaSecurity = PLAINTEXT,
                           timeout_s: float = 10.0) -> dict[int, int]:
    """The offset consumer group `group_id` has committed on each partition of `topic` (those
    without a commit are left out), read without joining the group."""
    config = consumer_config(bootstrap, group_id=group_id, client_id="committed",
                             security=security)
    consumer = Consumer(config)
    try:
        partitions = topic_partitions(consumer, topic, timeout_s=timeout_s)
        committed = consumer.committed([TopicPartition(topic, p) for p in partitions],
                                       timeout=timeout_s)
        return {tp.partition: tp.offset for tp in committed if tp.offset >= 0}
    finally:
        consumer.close()


def topic_partitions(consumer: Consumer, topic: str, *, timeout_s: float) -> list[int]:
    """`topic`'s partitions from the brokers' metadata; none when it does not exist (asking
    does not create it: `allow.auto.create.topics` is off)."""
    metadata = consumer.list_topics(topic, timeout=timeout_s).topics[topic]
    if metadata.error is not None:
        if metadata.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
            return []
        raise KafkaException(metadata.error)
    return sorted(metadata.partitions)


def _cached_end(consumer: Consumer, topic: str, partition: int) -> int:
    """The high watermark of the partition's last fetch response; negative while unknown."""
    return int(consumer.get_watermark_offsets(TopicPartition(topic, partition),
                                              cached=True)[1])
