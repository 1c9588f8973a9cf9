"""Transport security for every gRPC server and client of the mesh: TLS and mutual TLS.

A server turns TLS on with a certificate and key (RECSYS_TLS_CERT_FILE, RECSYS_TLS_KEY_FILE),
and mutual TLS with a CA bundle (RECSYS_TLS_CA_FILE): then every client must present a
certificate that CA signed, or the handshake fails before any RPC. Kubernetes' gRPC probes
cannot present one, so a server with TLS can also serve grpc.health.v1, and only that, in
plaintext on its own port (RECSYS_HEALTH_PORT).

Clients (the CLI, the tests, anything built on `services.core.client`) describe theirs with
`ClientTLS`; the CLI reads it from RECSYS_CLI_TLS_* variables (see `ClientTLS.from_env`).
Certificates are read once, at start: rotating them means restarting the process (a rolling
restart in Kubernetes).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from services.core.settings import SettingsError


def _read(variable: str, path: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise SettingsError(f"{variable}={path!r}: cannot read it ({exc.strerror})") from None
    if b"-----BEGIN " not in data:
        raise SettingsError(f"{variable}={path!r}: not a PEM file")
    return data


@dataclass(frozen=True)
class ServerTLS:
    """A server's certificate chain and key (PEM), and the CA that signs its clients' ones."""

    cert_chain: bytes
    private_key: bytes
    client_ca: bytes | None = None  # set: mutual TLS, a client certificate is required

    @property
    def mutual(self) -> bool:
        return self.client_ca is not None

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(self.private_key, self.cert_chain)], root_certificates=self.client_ca,
            require_client_auth=self.client_ca is not None)


def server_tls(*, cert_file: str, key_file: str, ca_file: str) -> ServerTLS | None:
    """The server's TLS from its settings' file paths ("" = unset); None means plaintext.

    Raises SettingsError (a one-line reason) for half a pair, a CA without a certificate, or
    a file that cannot be read.
    """
    if not (cert_file or key_file):
        if ca_file:
            raise SettingsError("RECSYS_TLS_CA_FILE needs RECSYS_TLS_CERT_FILE and "
                                "RECSYS_TLS_KEY_FILE: mutual TLS is TLS with client certificates")
        return None
    if not (cert_file and key_file):
        raise SettingsError("RECSYS_TLS_CERT_FILE and RECSYS_TLS_KEY_FILE go together")
    return ServerTLS(
        cert_chain=_read("RECSYS_TLS_CERT_FILE", cert_file),
        private_key=_read("RECSYS_TLS_KEY_FILE", key_file),
        client_ca=_read("RECSYS_TLS_CA_FILE", ca_file) if ca_file else None,
    )


# The client's variables: RECSYS_CLI_ like the CLI's targets, apart from the services' own.
CLIENT_ENV = {
    "ca_file": "RECSYS_CLI_TLS_CA_FILE",
    "cert_file": "RECSYS_CLI_TLS_CERT_FILE",
    "key_file": "RECSYS_CLI_TLS_KEY_FILE",
    "server_name": "RECSYS_CLI_TLS_SERVER_NAME",
    "token": "RECSYS_CLI_TOKEN",
}


@dataclass(frozen=True, kw_only=True)
class ClientTLS:
    """How a client reaches a TLS server: the CA to trust (None: the system's), its own
    certificate for mutual TLS, the name to expect in the server's certificate when the target
    is an address, and a bearer token for the edge (sent only over TLS)."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_name: str | None = None
    token: str | None = None

    def __post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise SettingsError(f"{CLIENT_ENV['cert_file']} and {CLIENT_ENV['key_file']} "
                                "go together")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ClientTLS | None:
        """From RECSYS_CLI_TLS_CA_FILE, _CERT_FILE, _KEY_FILE, _SERVER_NAME and
        RECSYS_CLI_TOKEN; None (plaintext) when none is set."""
        environ = os.environ if environ is None else environ
        values = {name: environ.get(variable) or None for name, variable in CLIENT_ENV.items()}
        if not any(values.values()):
            return None
        return cls(**values)

    def credentials(self) -> grpc.ChannelCredentials:
        def read(variable: str, path: str | None) -> bytes | None:
            return None if path is None else _read(variable, path)

        channel = grpc.ssl_channel_credentials(
            root_certificates=read(CLIENT_ENV["ca_file"], self.ca_file),
            private_key=read(CLIENT_ENV["key_file"], self.key_file),
            certificate_chain=read(CLIENT_ENV["cert_file"], self.cert_file))
        if self.token is None:
            return channel
        return grpc.composite_channel_credentials(
            channel, grpc.access_token_call_credentials(self.token))

    def options(self) -> list[tuple[str, Any]]:
        if self.server_name is None:
            return []
        return [("grpc.ssl_target_name_override", self.server_name)]
