"""The local PKI (scripts/localstack/pki.py) and the tokens `recsys token` mints with it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import jwt
import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from scripts.localstack import pki as pki_module
from scripts.localstack.pki import (
    ADMIN_IDENTITY,
    EDGE_IDENTITY,
    Pki,
    ensure_pki,
    rotate_certificates,
    rotate_signing_key,
)
from services.cli.__main__ import main as recsys
from services.cli.token import mint_token
from services.edge.profiles import pki_security
from services.edge.tokens import AUDIENCE, ISSUER


def _files(pki: Pki) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(pki.directory.rglob("*")) if p.is_file()}


def _verify(token: str, pki: Pki) -> dict[str, object]:
    """What Envoy does: find the key by kid in the JWKS, check signature, iss, aud, exp."""
    keys = {k["kid"]: k for k in json.loads(pki.jwks.read_text())["keys"]}
    key = jwt.PyJWK(keys[jwt.get_unverified_header(token)["kid"]])
    return jwt.decode(token, key.key, algorithms=["ES256"], audience=AUDIENCE, issuer=ISSUER)


def test_ensure_creates_everything_once(tmp_path: Path) -> None:
    pki = ensure_pki(tmp_path / "pki")
    before = _files(pki)
    assert set(before) == {"ca.crt", "ca.key", "server.crt", "server.key", "client.crt",
                           "client.key", "envoy-client.crt", "envoy-client.key",
                           "signing-key.pem", "jwks.json"}
    for key in (pki.ca_key, pki.server_key, pki.client_key, pki.envoy_client_key,
                pki.signing_key):
        assert key.stat().st_mode & 0o077 == 0, key
    assert _files(ensure_pki(tmp_path / "pki")) == before


def test_the_edge_reads_the_files_the_pki_writes(tmp_path: Path) -> None:
    pki = ensure_pki(tmp_path / "pki")
    security = pki_security(pki.directory, mutual_tls=True)
    assert security.upstream_tls is not None
    listener, upstream = security.listener_tls, security.upstream_tls
    assert (listener.cert, listener.key, security.jwks) == (
        str(pki.server_cert), str(pki.server_key), str(pki.jwks))
    assert (upstream.cert, upstream.key, upstream.ca) == (
        str(pki.envoy_client_cert), str(pki.envoy_client_key), str(pki.ca_cert))


def test_each_client_certificate_names_its_identity(tmp_path: Path) -> None:
    """The names the services' allow-lists check (RECSYS_TLS_*CALLERS)."""
    pki = ensure_pki(tmp_path / "pki")
    for path, identity in ((pki.client_cert, ADMIN_IDENTITY),
                           (pki.envoy_client_cert, EDGE_IDENTITY)):
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.DNSName) == [identity]
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == identity


def test_certificates_chain_to_the_ca_with_the_right_names(tmp_path: Path) -> None:
    pki = ensure_pki(tmp_path)
    ca = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    server = x509.load_pem_x509_certificate(pki.server_cert.read_bytes())
    client = x509.load_pem_x509_certificate(pki.client_cert.read_bytes())
    server.verify_directly_issued_by(ca)
    client.verify_directly_issued_by(ca)
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"localhost", "ingest", "trainer", "recommender", "envoy"} <= set(
        san.get_values_for_type(x509.DNSName))
    assert "127.0.0.1" in {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    usage = client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert [u.dotted_string for u in usage] == ["1.3.6.1.5.5.7.3.2"]  # clientAuth only


def test_a_certificate_missing_a_name_is_reissued(tmp_path: Path) -> None:
    pki = ensure_pki(tmp_path, names=["localhost"])
    server, client = pki.server_cert.read_bytes(), pki.client_cert.read_bytes()
    ensure_pki(tmp_path, names=["localhost", "recommender.recsys.svc"])
    assert pki.server_cert.read_bytes() != server
    assert pki.client_cert.read_bytes() == client


def test_rotating_certificates_keeps_the_ca(tmp_path: Path) -> None:
    pki = ensure_pki(tmp_path)
    ca, server = pki.ca_cert.read_bytes(), pki.server_key.read_bytes()
    rotate_certificates(tmp_path)
    assert pki.ca_cert.read_bytes() == ca
    assert pki.server_key.read_bytes() != server


def test_token_carries_scopes_and_verifies_against_the_jwks(tmp_path: Path) -> None:
    pki = ensure_pki(tmp_path)
    claims = _verify(pki.mint_token(["recommend:read", "admin"], subject="app-1"), pki)
    assert claims["scope"] == "recommend:read admin"
    assert claims["sub"] == "app-1"
    assert 0 < int(claims["exp"]) - time.time() <= 3600  # type: ignore[call-overload]


def test_rotation_keeps_the_previous_key_for_tokens_already_issued(tmp_path: Path) -> None:
    pki = ensure_pki(tmp_path)
    old = pki.mint_token(["admin"])
    rotate_signing_key(tmp_path)
    new = pki.mint_token(["admin"])
    assert jwt.get_unverified_header(old)["kid"] != jwt.get_unverified_header(new)["kid"]
    _verify(old, pki)
    _verify(new, pki)
    rotate_signing_key(tmp_path)  # keeps one retired key: the first one is gone
    with pytest.raises(KeyError):
        _verify(old, pki)
    assert len(json.loads(pki.jwks.read_text())["keys"]) == 2


def test_token_rejects_no_scope_and_silly_lifetimes(tmp_path: Path) -> None:
    pki = ensure_pki(tmp_path)
    with pytest.raises(ValueError, match="at least one scope"):
        mint_token([], key_file=pki.signing_key)
    with pytest.raises(ValueError, match="ttl"):
        mint_token(["admin"], key_file=pki.signing_key, ttl_s=0)


def test_recsys_token_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pki = ensure_pki(tmp_path)
    assert recsys(["token", "--scope", "ingest:write", "--key-file", str(pki.signing_key),
                   "--subject", "loader", "--ttl", "60"]) == 0
    claims = _verify(capsys.readouterr().out.strip(), pki)
    assert (claims["scope"], claims["sub"]) == ("ingest:write", "loader")
    assert recsys(["token", "--scope", "admin", "--key-file", str(tmp_path / "nope")]) == 2
    assert "recsys token: error:" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        recsys(["token", "--scope", "root"])


def test_the_default_folder_is_ignored_by_git() -> None:
    relative = pki_module.DEFAULT_DIR.relative_to(pki_module.ROOT)
    ignored = (pki_module.ROOT / ".gitignore").read_text().split()
    assert f"{relative.parts[0]}/" in ignored
