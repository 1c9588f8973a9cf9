"""Settings every server shares (where it listens, transport security, logging, shutdown grace),
and the groups several services mix in: Kafka (with its client security) and MLflow."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from services.core import kafka, tls
from services.core.callers import CallerPolicy
from services.core.settings import SettingsError, env, non_negative, port, positive


def secret(field: Any) -> Any:
    """A settings field left out of the dataclass' repr, so logging settings never shows it."""
    field.repr = False
    return field


@dataclass(frozen=True, kw_only=True)
class ServerSettings:
    """The part of each service's settings that the shared runtime uses."""

    host: str = env("RECSYS_GRPC_HOST", "127.0.0.1", "Address the gRPC server binds.")
    grpc_port: int = env("RECSYS_GRPC_PORT", 0, "gRPC port; 0 picks a free one.",
                         check=port, rule="0 to 65535")
    metrics_port: int = env("RECSYS_METRICS_PORT", 0,
                            "Prometheus /metrics HTTP port; 0 picks a free one.",
                            check=port, rule="0 to 65535")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = env(
        "RECSYS_LOG_LEVEL", "INFO", "Log level.")
    log_format: Literal["auto", "json", "text"] = env(
        "RECSYS_LOG_FORMAT", "auto", "json, text, or auto (text on a terminal, else json).")
    shutdown_grace_s: float = env("RECSYS_SHUTDOWN_GRACE_S", 10.0,
                                  "Seconds in-flight RPCs get to finish on SIGTERM.",
                                  check=positive, rule="> 0")
    shutdown_delay_s: float = env(
        "RECSYS_SHUTDOWN_DELAY_S", 0.0,
        "Seconds a server keeps serving on SIGTERM after health turns NOT_SERVING, before it "
        "drains: load balancers that health-check it (Envoy) stop sending calls first. 0 in "
        "Kubernetes, where the pod's preStop sleep does this.", check=non_negative, rule=">= 0")
    tls_cert_file: str = env(
        "RECSYS_TLS_CERT_FILE", "",
        "PEM certificate chain of the gRPC server; with RECSYS_TLS_KEY_FILE the port speaks TLS "
        "only. Empty: plaintext.")
    tls_key_file: str = env("RECSYS_TLS_KEY_FILE", "",
                            "PEM private key of RECSYS_TLS_CERT_FILE.")
    tls_ca_file: str = env(
        "RECSYS_TLS_CA_FILE", "",
        "PEM CA bundle; set, clients must present a certificate it signed (mutual TLS).")
    tls_callers: tuple[str, ...] = env(
        "RECSYS_TLS_CALLERS", ("envoy", "recsys-admin"),
        "With mutual TLS: the client certificate identities (a DNS name of the certificate, "
        "else its common name) that may call this service's RPCs and reflection; any "
        "certificate from the CA may call health.")
    tls_admin_callers: tuple[str, ...] = env(
        "RECSYS_TLS_ADMIN_CALLERS", ("envoy", "recsys-admin"),
        "With mutual TLS: the identities that may call the admin RPCs (start or cancel a "
        "training job, promote a model version).")
    tls_edge_callers: tuple[str, ...] = env(
        "RECSYS_TLS_EDGE_CALLERS", ("envoy",),
        "With mutual TLS: the identities (Envoy) trusted to name the end user they call for, "
        "in the x-recsys-caller header (logged, and recorded on admin actions).")
    health_port: int = env(
        "RECSYS_HEALTH_PORT", 0,
        "Plaintext port serving only grpc.health.v1, for probes that cannot do (mutual) TLS, "
        "such as Kubernetes' gRPC probes; 0: none.", check=port, rule="0 to 65535")

    def validate(self) -> None:
        """Cross-field checks that `settings.load` cannot do field by field; SettingsError."""
        self.server_tls()
        if isinstance(self, KafkaSettings):
            self.kafka_security()
        if isinstance(self, MlflowSettings):
            self.mlflow_credentials()

    def caller_policy(self) -> CallerPolicy:
        """Who may call what, by client certificate (enforced with mutual TLS only)."""
        return CallerPolicy.of(callers=self.tls_callers, admins=self.tls_admin_callers,
                               edge=self.tls_edge_callers)

    def server_tls(self) -> tls.ServerTLS | None:
        """The gRPC port's TLS (None: plaintext); raises SettingsError when misconfigured."""
        return tls.server_tls(cert_file=self.tls_cert_file, key_file=self.tls_key_file,
                              ca_file=self.tls_ca_file)


@dataclass(frozen=True, kw_only=True)
class KafkaSettings:
    """Where the interaction events are: ingest writes the topic, the others read it."""

    kafka_bootstrap: str = env("RECSYS_KAFKA_BOOTSTRAP", "127.0.0.1:9092",
                               "Kafka bootstrap servers, host:port[,host:port...].")
    kafka_topic: str = env("RECSYS_KAFKA_TOPIC", "interactions",
                           "Topic of Interaction events (ingest writes it; the trainer and the "
                           "recommender's history read it).")
    # How the clients authenticate and protect the connection (SASL, TLS): see services.core.kafka.
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = env(
        "RECSYS_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT",
        "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL: how Kafka clients reach the brokers.")
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = env(
        "RECSYS_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512",
        "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512, with a SASL_ protocol.")
    kafka_sasl_username: str = env("RECSYS_KAFKA_SASL_USERNAME", "",
                                   "SASL user name, with a SASL_ protocol.")
    kafka_sasl_password: str = secret(env(
        "RECSYS_KAFKA_SASL_PASSWORD", "",
        "SASL password, with a SASL_ protocol (from a Secret; never printed)."))
    kafka_ssl_ca_file: str = env(
        "RECSYS_KAFKA_SSL_CA_FILE", "",
        "PEM CA bundle for the brokers' certificates, with SSL or SASL_SSL; empty: the "
        "system's.")
    kafka_ssl_cert_file: str = env(
        "RECSYS_KAFKA_SSL_CERT_FILE", "",
        "PEM client certificate for brokers that authenticate clients by certificate (SSL).")
    kafka_ssl_key_file: str = env("RECSYS_KAFKA_SSL_KEY_FILE", "",
                                  "PEM private key of RECSYS_KAFKA_SSL_CERT_FILE.")

    def kafka_security(self) -> kafka.KafkaSecurity:
        """Security options for every Kafka client (`kafka.producer_config(security=...)`)."""
        return kafka.KafkaSecurity(
            protocol=self.kafka_security_protocol, sasl_mechanism=self.kafka_sasl_mechanism,
            sasl_username=self.kafka_sasl_username, sasl_password=self.kafka_sasl_password,
            ssl_ca_file=self.kafka_ssl_ca_file, ssl_cert_file=self.kafka_ssl_cert_file,
            ssl_key_file=self.kafka_ssl_key_file)


@dataclass(frozen=True, kw_only=True)
class MlflowSettings:
    """The model registry: the trainer registers versions, the recommender serves one."""

    mlflow_tracking_uri: str = env("RECSYS_MLFLOW_TRACKING_URI", "http://127.0.0.1:5000",
                                   "MLflow tracking server (also its model registry).")
    model_name: str = env("RECSYS_MODEL_NAME", "recsys-mf",
                          "Registered model: the trainer adds a version per run, the "
                          "recommender serves its \"champion\".")
    mlflow_username: str = env(
        "RECSYS_MLFLOW_USERNAME", "",
        "MLflow user (its basic-auth app): the trainer's may write, the recommender's only "
        "read. Empty: no credentials (an MLflow without authentication).")
    mlflow_password: str = secret(env(
        "RECSYS_MLFLOW_PASSWORD", "",
        "Password of RECSYS_MLFLOW_USERNAME (from a Secret; never printed)."))

    def mlflow_credentials(self) -> tuple[str, str] | None:
        """(user, password) for MLflow, or None; SettingsError when only one is set."""
        if bool(self.mlflow_username) != bool(self.mlflow_password):
            raise SettingsError("RECSYS_MLFLOW_USERNAME and RECSYS_MLFLOW_PASSWORD go together")
        return (self.mlflow_username, self.mlflow_password) if self.mlflow_username else None
