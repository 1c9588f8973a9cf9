"""TLS settings: what turns TLS on, and the one-line reasons a bad combination stops a server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import pytest

from scripts.localstack.pki import ensure_pki
from services.core import main
from services.core.config import ServerSettings
from services.core.settings import SettingsError, load
from services.core.tls import ClientTLS


@pytest.fixture(scope="module")
def pki_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_pki(tmp_path_factory.mktemp("pki")).directory


def _settings(pki_dir: Path, **names: str) -> ServerSettings:
    paths: dict[str, Any] = {field: str(pki_dir / name) if name else ""
                             for field, name in names.items()}
    return ServerSettings(**paths)


def test_plaintext_unless_a_certificate_is_given() -> None:
    assert ServerSettings().server_tls() is None


def test_certificate_and_key_turn_tls_on_and_a_ca_makes_it_mutual(pki_dir: Path) -> None:
    one_way = _settings(pki_dir, tls_cert_file="server.crt", tls_key_file="server.key")
    tls = one_way.server_tls()
    assert tls is not None and not tls.mutual
    mutual = _settings(pki_dir, tls_cert_file="server.crt", tls_key_file="server.key",
                       tls_ca_file="ca.crt").server_tls()
    assert mutual is not None and mutual.mutual
    assert isinstance(mutual.credentials(), grpc.ServerCredentials)


@pytest.mark.parametrize(("names", "message"), [
    ({"tls_cert_file": "server.crt"}, "RECSYS_TLS_CERT_FILE and RECSYS_TLS_KEY_FILE go together"),
    ({"tls_key_file": "server.key"}, "RECSYS_TLS_CERT_FILE and RECSYS_TLS_KEY_FILE go together"),
    ({"tls_ca_file": "ca.crt"}, "RECSYS_TLS_CA_FILE needs RECSYS_TLS_CERT_FILE and "
     "RECSYS_TLS_KEY_FILE: mutual TLS is TLS with client certificates"),
    ({"tls_cert_file": "nope.crt", "tls_key_file": "server.key"},
     "RECSYS_TLS_CERT_FILE='{dir}/nope.crt': cannot read it (No such file or directory)"),
    ({"tls_cert_file": "server.crt", "tls_key_file": "server.key", "tls_ca_file": "jwks.json"},
     "RECSYS_TLS_CA_FILE='{dir}/jwks.json': not a PEM file"),
])
def test_bad_combinations_fail_with_a_one_line_reason(
    pki_dir: Path, names: dict[str, str], message: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        _settings(pki_dir, **names).server_tls()
    assert str(caught.value) == message.format(dir=pki_dir)


def test_a_server_with_bad_tls_settings_exits_2_before_starting(
    pki_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RECSYS_TLS_CERT_FILE", str(pki_dir / "server.crt"))

    def never(*_: object) -> Any:
        raise AssertionError("the app must not be built")

    with pytest.raises(SystemExit) as exited:
        main.run(ServerSettings, "RECSYS_DEMO_", never)
    assert exited.value.code == 2
    assert capsys.readouterr().err == (
        "error: RECSYS_TLS_CERT_FILE and RECSYS_TLS_KEY_FILE go together\n")


def test_health_port_is_a_port() -> None:
    with pytest.raises(SettingsError, match="RECSYS_HEALTH_PORT=70000: must be 0 to 65535"):
        load(ServerSettings, {"RECSYS_HEALTH_PORT": "70000"})


def test_client_tls_comes_from_the_cli_variables(pki_dir: Path) -> None:
    assert ClientTLS.from_env({}) is None
    assert ClientTLS.from_env({"RECSYS_CLI_TLS_CA_FILE": ""}) is None
    tls = ClientTLS.from_env({
        "RECSYS_CLI_TLS_CA_FILE": str(pki_dir / "ca.crt"),
        "RECSYS_CLI_TLS_CERT_FILE": str(pki_dir / "client.crt"),
        "RECSYS_CLI_TLS_KEY_FILE": str(pki_dir / "client.key"),
        "RECSYS_CLI_TLS_SERVER_NAME": "recommender",
        "RECSYS_CLI_TOKEN": "t0ken",
    })
    assert tls == ClientTLS(ca_file=str(pki_dir / "ca.crt"),
                            cert_file=str(pki_dir / "client.crt"),
                            key_file=str(pki_dir / "client.key"), server_name="recommender",
                            token="t0ken")
    assert isinstance(tls.credentials(), grpc.ChannelCredentials)
    assert tls.options() == [("grpc.ssl_target_name_override", "recommender")]


def test_client_certificate_and_key_go_together(pki_dir: Path) -> None:
    with pytest.raises(SettingsError, match="RECSYS_CLI_TLS_CERT_FILE and RECSYS_CLI_TLS_KEY_FILE"):
        ClientTLS.from_env({"RECSYS_CLI_TLS_CERT_FILE": str(pki_dir / "client.crt")})
