"""Kafka client security settings: what they add to every client's configuration."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from confluent_kafka import Consumer
from kafka import KafkaAdminClient, KafkaProducer

from services.core.config import KafkaSettings, ServerSettings
from services.core.kafka import PLAINTEXT, KafkaSecurity, consumer_config, producer_config
from services.core.settings import SettingsError, load


@dataclass(frozen=True, kw_only=True)
class Settings(ServerSettings, KafkaSettings):
    """A service that is a Kafka client, as each of the three is."""


SASL_SSL = {
    "RECSYS_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
    "RECSYS_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
    "RECSYS_KAFKA_SASL_USERNAME": "recsys-ingest",
    "RECSYS_KAFKA_SASL_PASSWORD": "from-a-secret",  # pragma: allowlist secret - a test value
    "RECSYS_KAFKA_SSL_CA_FILE": "/etc/kafka-ca/ca.crt",
}


def test_plaintext_by_default() -> None:
    security = Settings().kafka_security()
    assert security == PLAINTEXT
    assert producer_config("b:9092", client_id="x")["security_protocol"] == "PLAINTEXT"
    assert consumer_config("b:9092", group_id="g",
                           client_id="x")["security.protocol"] == "PLAINTEXT"


def test_sasl_ssl_reaches_producers_and_consumers() -> None:
    security = load(Settings, SASL_SSL).kafka_security()
    password = SASL_SSL["RECSYS_KAFKA_SASL_PASSWORD"]
    producer = producer_config("b:9092", client_id="x", security=security)
    assert {"security_protocol": "SASL_SSL", "ssl_check_hostname": True,
            "ssl_cafile": "/etc/kafka-ca/ca.crt", "sasl_mechanism": "SCRAM-SHA-256",
            "sasl_plain_username": "recsys-ingest",
            "sasl_plain_password": password}.items() <= producer.items()
    consumer = consumer_config("b:9092", group_id="g", client_id="x", security=security)
    assert {"security.protocol": "SASL_SSL", "ssl.endpoint.identification.algorithm": "https",
            "ssl.ca.location": "/etc/kafka-ca/ca.crt", "sasl.mechanism": "SCRAM-SHA-256",
            "sasl.username": "recsys-ingest",
            "sasl.password": password}.items() <= consumer.items()
    # Every option is one kafka-python knows, for each kind of kafka-python client.
    for client, config in ((KafkaProducer, producer),
                           (KafkaAdminClient, security.client_options())):
        assert set(config) <= set(client.DEFAULT_CONFIG), client


def test_librdkafka_accepts_every_consumer_property() -> None:
    """librdkafka refuses an unknown property or value when the client is made (made here on a
    closed loopback port: it connects nowhere else)."""
    security = KafkaSecurity(protocol="SASL_PLAINTEXT", sasl_mechanism="SCRAM-SHA-512",
                             sasl_username="u",
                             sasl_password="p")  # pragma: allowlist secret - a test value
    for group_id in ("g", None):
        config = consumer_config("127.0.0.1:1", group_id=group_id, client_id="x",
                                 security=security)
        Consumer(config).close()


def test_client_certificates() -> None:
    security = load(Settings, {
        "RECSYS_KAFKA_SECURITY_PROTOCOL": "SSL", "RECSYS_KAFKA_SSL_CERT_FILE": "/c.crt",
        "RECSYS_KAFKA_SSL_KEY_FILE": "/c.key"}).kafka_security()
    assert security.client_options() == {
        "security_protocol": "SSL", "ssl_check_hostname": True, "ssl_certfile": "/c.crt",
        "ssl_keyfile": "/c.key"}
    assert security.librdkafka_options() == {
        "security.protocol": "SSL", "ssl.endpoint.identification.algorithm": "https",
        "ssl.certificate.location": "/c.crt", "ssl.key.location": "/c.key"}


def test_the_password_is_never_printed() -> None:
    settings = load(Settings, SASL_SSL)
    assert "from-a-secret" not in repr(settings)
    assert "from-a-secret" not in repr(settings.kafka_security())


@pytest.mark.parametrize(("environ", "message"), [
    ({"RECSYS_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "needs RECSYS_KAFKA_SASL_USERNAME"),
    ({**SASL_SSL, "RECSYS_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
      "RECSYS_KAFKA_SASL_MECHANISM": "PLAIN", "RECSYS_KAFKA_SSL_CA_FILE": ""},
     "sends the password in clear"),
    ({"RECSYS_KAFKA_SECURITY_PROTOCOL": "SSL", "RECSYS_KAFKA_SSL_CERT_FILE": "/c.crt"},
     "RECSYS_KAFKA_SSL_CERT_FILE and RECSYS_KAFKA_SSL_KEY_FILE go together"),
    ({"RECSYS_KAFKA_SSL_CA_FILE": "/ca.crt"}, "need RECSYS_KAFKA_SECURITY_PROTOCOL SSL"),
])
def test_inconsistent_settings_fail_with_a_reason(environ: dict[str, str], message: str) -> None:
    settings = load(Settings, environ)
    with pytest.raises(SettingsError, match=message):
        settings.validate()


def test_unknown_protocol_is_refused_at_load() -> None:
    with pytest.raises(SettingsError, match="expected one of PLAINTEXT, SSL"):
        load(Settings, {"RECSYS_KAFKA_SECURITY_PROTOCOL": "TLS"})
