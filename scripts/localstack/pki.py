"""The local public-key infrastructure: a certificate authority, certificates, a token signing key.

Generated into an ignored folder (`.local/pki` for the local stack, a temporary one in tests)
and kept there: `ensure_pki` creates what is missing, and re-issues a certificate only when it
is unreadable, close to expiry, not signed by the current CA or missing a host name. Keys never
leave the folder and are never committed (`.local/` is in .gitignore).

    <dir>/ca.crt, ca.key              the authority every server and client trusts
    <dir>/server.crt, server.key      Envoy's listener and every gRPC server (SANs below)
    <dir>/client.crt, client.key      the CLI's mutual TLS identity, ADMIN_IDENTITY
    <dir>/envoy-client.crt, .key      Envoy's towards the services, EDGE_IDENTITY
    <dir>/jwt/signing-key.pem         signs access tokens (ES256; `recsys token`)
    <dir>/jwt/retired/<kid>.pem       public keys of earlier signing keys, still accepted
    <dir>/jwks.json                   what Envoy verifies tokens against: current + retired

Every key is EC P-256: generated in microseconds, so each test session makes its own.

    python -m scripts.localstack.pki                      # create what is missing, print paths
    python -m scripts.localstack.pki rotate-signing-key   # new key; the old one stays in jwks
    python -m scripts.localstack.pki rotate-certs         # re-issue server and client certs
    python -m scripts.localstack.pki reset                # new CA and everything under it
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import json
import os
import shutil
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from services.cli import token

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DIR = ROOT / ".local" / "pki"

# Names the server certificate answers to: loopback for the local stack and tests, the
# Kubernetes Service names for a cluster that uses this CA.
SERVER_NAMES = ("localhost", "envoy", "ingest", "trainer", "recommender", "redis")
SERVER_IPS = ("127.0.0.1",)
# Client certificate identities (their DNS name and common name), which the services' allow-lists
# (RECSYS_TLS_*CALLERS, services.core.callers) name: the operator's CLI and Envoy.
ADMIN_IDENTITY = "recsys-admin"
EDGE_IDENTITY = "envoy"
CA_DAYS = 5 * 365
CERT_DAYS = 365
RENEW_BEFORE = datetime.timedelta(days=30)
RETIRED_KEYS_KEPT = 1


@dataclass(frozen=True)
class Pki:
    """Paths into one PKI folder, and what clients and servers need from it."""

    directory: Path

    @property
    def ca_cert(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca.key"

    @property
    def server_cert(self) -> Path:
        return self.directory / "server.crt"

    @property
    def server_key(self) -> Path:
        return self.directory / "server.key"

    @property
    def client_cert(self) -> Path:
        return self.directory / "client.crt"

    @property
    def client_key(self) -> Path:
        return self.directory / "client.key"

    @property
    def envoy_client_cert(self) -> Path:
        return self.directory / "envoy-client.crt"

    @property
    def envoy_client_key(self) -> Path:
        return self.directory / "envoy-client.key"

    @property
    def signing_key(self) -> Path:
        return self.directory / "jwt" / "signing-key.pem"

    @property
    def retired_keys(self) -> Path:
        return self.directory / "jwt" / "retired"

    @property
    def jwks(self) -> Path:
        return self.directory / "jwks.json"

    def mint_token(self, scopes: Iterable[str], **options: Any) -> str:
        """A token signed with this PKI's current key; `options` go to `token.mint_token`."""
        return token.mint_token(scopes, key_file=self.signing_key, **options)

    def server_env(self, *, mutual: bool = True) -> dict[str, str]:
        """The settings that turn on TLS (and with `mutual`, client certificates) in a service."""
        env = {"RECSYS_TLS_CERT_FILE": str(self.server_cert),
               "RECSYS_TLS_KEY_FILE": str(self.server_key)}
        if mutual:
            env["RECSYS_TLS_CA_FILE"] = str(self.ca_cert)
        return env

    def client_env(self) -> dict[str, str]:
        """The variables `services.core.client.channel()` (the CLI) reads for mutual TLS."""
        return {"RECSYS_CLI_TLS_CA_FILE": str(self.ca_cert),
                "RECSYS_CLI_TLS_CERT_FILE": str(self.client_cert),
                "RECSYS_CLI_TLS_KEY_FILE": str(self.client_key)}

    def grpcurl_args(self, *, client_cert: bool = True) -> list[str]:
        """grpcurl's TLS flags: trust the CA, and present the client certificate."""
        args = ["-cacert", str(self.ca_cert)]
        if client_cert:
            args += ["-cert", str(self.client_cert), "-key", str(self.client_key)]
        return args


# -- files ------------------------------------------------------------------------------------


def _write(path: Path, data: bytes, *, private: bool = False) -> None:
    """Atomically (a rename in the same folder: watchers see one move); keys mode 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.replace(tmp, path)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{path}: not an EC private key")
    return key


def _load_cert(path: Path) -> x509.Certificate | None:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return None


# -- certificates -----------------------------------------------------------------------------


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _builder(subject: str, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey,
             days: int) -> x509.CertificateBuilder:
    now = _now()
    return (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject),
                                     x509.NameAttribute(NameOID.ORGANIZATION_NAME,
                                                        "recsys mesh (local)")]))
            .issuer_name(issuer)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key),
                           critical=False))


def _create_ca(pki: Pki) -> None:
    key = _new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "recsys mesh local CA"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "recsys mesh (local)")])
    cert = (_builder("recsys mesh local CA", name, key.public_key(), CA_DAYS)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    _write(pki.ca_key, _key_pem(key), private=True)
    _write(pki.ca_cert, cert.public_bytes(serialization.Encoding.PEM))


def _issue(pki: Pki, cert_path: Path, key_path: Path, *, subject: str, usage: Any,
           names: Sequence[str] = (), ips: Sequence[str] = ()) -> None:
    ca_key = _load_key(pki.ca_key)
    ca_cert = _load_cert(pki.ca_cert)
    assert ca_cert is not None
    key = _new_key()
    alt_names: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    alt_names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    builder = (_builder(subject, ca_cert.subject, key.public_key(), CERT_DAYS)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(
                   digital_signature=True, content_commitment=False, key_encipherment=False,
                   data_encipherment=False, key_agreement=False, key_cert_sign=False,
                   crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
               .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                   ca_key.public_key()), critical=False))
    if alt_names:
        builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    # Key first: a reader that sees the new certificate also finds its key.
    _write(key_path, _key_pem(key), private=True)
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM))


def _current(pki: Pki, cert_path: Path, key_path: Path, *, names: Sequence[str] = (),
             ips: Sequence[str] = ()) -> bool:
    """The certificate exists, matches its key, is signed by the CA, covers the names and
    is not close to expiry."""
    cert, ca = _load_cert(cert_path), _load_cert(pki.ca_cert)
    if cert is None or ca is None or not key_path.is_file():
        return False
    try:
        cert.verify_directly_issued_by(ca)
        if _load_key(key_path).public_key() != cert.public_key():
            return False
    except (ValueError, TypeError):
        return False
    if cert.not_valid_after_utc - _now() < RENEW_BEFORE:
        return False
    if names or ips:
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return False
        have = {*san.get_values_for_type(x509.DNSName),
                *(str(ip) for ip in san.get_values_for_type(x509.IPAddress))}
        if not {*names, *ips} <= have:
            return False
    return True


def issue_client_certificate(pki: Pki, identity: str, cert_path: Path, key_path: Path) -> None:
    """A client certificate (new key) for `identity`, its DNS name and common name."""
    _issue(pki, cert_path, key_path, subject=identity, usage=ExtendedKeyUsageOID.CLIENT_AUTH,
           names=[identity])


def _client_certificates(pki: Pki) -> dict[str, tuple[Path, Path]]:
    return {ADMIN_IDENTITY: (pki.client_cert, pki.client_key),
            EDGE_IDENTITY: (pki.envoy_client_cert, pki.envoy_client_key)}


# -- token signing keys -----------------------------------------------------------------------


def _write_jwks(pki: Pki) -> None:
    keys = [token.public_jwk(_load_key(pki.signing_key).public_key())]
    retired = sorted(pki.retired_keys.glob("*.pem"), key=lambda p: p.stat().st_mtime,
                     reverse=True)
    for path in retired:
        public = serialization.load_pem_public_key(path.read_bytes())
        keys.append(token.public_jwk(public))
    _write(pki.jwks, json.dumps({"keys": keys}, indent=2).encode() + b"\n")


def _ensure_signing_key(pki: Pki) -> None:
    if not pki.signing_key.is_file():
        _write(pki.signing_key, _key_pem(_new_key()), private=True)
    _write_jwks(pki)


def rotate_signing_key(directory: Path = DEFAULT_DIR, *, keep: int = RETIRED_KEYS_KEPT) -> str:
    """A new signing key; the previous one's public key stays in the JWKS (`keep` of them), so
    tokens it signed stay valid until they expire. Returns the new key's `kid`."""
    pki = ensure_pki(directory)
    old = _load_key(pki.signing_key).public_key()
    kid = token.public_jwk(old)["kid"]
    _write(pki.retired_keys / f"{kid}.pem", old.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    retired = sorted(pki.retired_keys.glob("*.pem"), key=lambda p: p.stat().st_mtime,
                     reverse=True)
    for stale in retired[keep:]:
        stale.unlink()
    _write(pki.signing_key, _key_pem(_new_key()), private=True)
    _write_jwks(pki)
    return token.public_jwk(_load_key(pki.signing_key).public_key())["kid"]


# -- the whole folder -------------------------------------------------------------------------


def ensure_pki(directory: Path = DEFAULT_DIR, *, names: Sequence[str] = SERVER_NAMES,
               ips: Sequence[str] = SERVER_IPS) -> Pki:
    """Create what is missing or stale in `directory`; keep everything still good."""
    pki = Pki(Path(directory).resolve())
    pki.directory.mkdir(parents=True, exist_ok=True)
    pki.directory.chmod(0o700)
    ca = _load_cert(pki.ca_cert)
    if ca is None or not pki.ca_key.is_file() or ca.not_valid_after_utc - _now() < RENEW_BEFORE:
        _create_ca(pki)
    if not _current(pki, pki.server_cert, pki.server_key, names=names, ips=ips):
        _issue(pki, pki.server_cert, pki.server_key, subject="recsys-server",
               usage=ExtendedKeyUsageOID.SERVER_AUTH, names=names, ips=ips)
    for identity, (cert, key) in _client_certificates(pki).items():
        if not _current(pki, cert, key, names=[identity]):
            issue_client_certificate(pki, identity, cert, key)
    _ensure_signing_key(pki)
    return pki


def rotate_certificates(directory: Path = DEFAULT_DIR, *, names: Sequence[str] = SERVER_NAMES,
                        ips: Sequence[str] = SERVER_IPS) -> Pki:
    """Re-issue the server and client certificates (new keys) under the current CA."""
    pki = ensure_pki(directory, names=names, ips=ips)
    _issue(pki, pki.server_cert, pki.server_key, subject="recsys-server",
           usage=ExtendedKeyUsageOID.SERVER_AUTH, names=names, ips=ips)
    for identity, (cert, key) in _client_certificates(pki).items():
        issue_client_certificate(pki, identity, cert, key)
    return pki


def reset(directory: Path = DEFAULT_DIR) -> Pki:
    """A new CA and everything under it (tokens signed before stop verifying)."""
    shutil.rmtree(directory, ignore_errors=True)
    return ensure_pki(directory)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.localstack.pki",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR,
                        help="the PKI folder (default .local/pki)")
    parser.add_argument("action", nargs="?", default="ensure",
                        choices=["ensure", "rotate-signing-key", "rotate-certs", "reset"])
    args = parser.parse_args(argv)
    if args.action == "rotate-signing-key":
        print(f"new signing key {rotate_signing_key(args.dir)}; restart Envoy to load "
              f"{args.dir / 'jwks.json'}")
    elif args.action == "rotate-certs":
        rotate_certificates(args.dir)
        print("re-issued server and client certificates; restart the services")
    elif args.action == "reset":
        reset(args.dir)
        print("new CA, certificates and signing key; restart the stack")
    pki = ensure_pki(args.dir)
    for name in ("ca_cert", "server_cert", "server_key", "client_cert", "client_key",
                 "envoy_client_cert", "envoy_client_key", "signing_key", "jwks"):
        print(f"{name:<12} {getattr(pki, name)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
