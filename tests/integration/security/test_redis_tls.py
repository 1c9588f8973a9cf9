"""Redis with a password and TLS, configured the way the recommender is: by its settings."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.exceptions import AuthenticationError
from redis.exceptions import ConnectionError as RedisConnectionError

from scripts.localstack.components import HOST, RedisServer, tcp_open
from scripts.localstack.pki import Pki
from services.core.settings import SettingsError, load
from services.recommender.cache import Keys, connect
from services.recommender.history import HistoryWriter
from services.recommender.settings import RecommenderSettings

pytestmark = pytest.mark.integration

PASSWORD = "s3cret-for-tests"  # pragma: allowlist secret - a throwaway server's password


class TlsRedis(RedisServer):
    """redis-server on a TLS-only port, with a password; clients need no certificate."""

    def __init__(self, data_dir: Path, pki: Pki) -> None:
        super().__init__(data_dir, password=PASSWORD)
        self.pki = pki

    def command(self) -> list[str]:
        argv = super().command()
        argv[argv.index("--port") + 1] = "0"  # no plaintext port at all
        return [*argv, "--tls-port", str(self.port), "--tls-cert-file", str(self.pki.server_cert),
                "--tls-key-file", str(self.pki.server_key),
                "--tls-ca-cert-file", str(self.pki.ca_cert), "--tls-auth-clients", "no"]

    def probe(self) -> bool:
        return tcp_open(self.port)


@pytest.fixture(scope="module")
def tls_redis(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRedis]:
    server = TlsRedis(tmp_path_factory.mktemp("redis-tls"), pki)
    try:
        server.start().wait_ready(20)
        yield server
    finally:
        server.stop()


def _settings(url: str, ca: Path | None) -> RecommenderSettings:
    environ = {"RECSYS_REDIS_URL": url}
    if ca is not None:
        environ["RECSYS_REDIS_TLS_CA_FILE"] = str(ca)
    settings = load(RecommenderSettings, environ)
    settings.validate()
    return settings


async def _ping(url: str) -> bool:
    client = connect(url, timeout_s=2)
    try:
        return bool(await client.ping())
    finally:
        await client.aclose()


def test_the_recommender_reaches_redis_over_tls_with_its_password(
    tls_redis: TlsRedis, pki: Pki
) -> None:
    settings = _settings(f"rediss://:{PASSWORD}@{HOST}:{tls_redis.port}/0", pki.ca_cert)
    # The cache (asyncio client) and the history writer (blocking client) both connect.
    assert asyncio.run(_ping(settings.redis_connection_url))
    writer = HistoryWriter.connect(settings.redis_connection_url, history_size=5, ttl_s=60)
    writer.record([("u1", "i1")])
    client = redis.Redis.from_url(settings.redis_connection_url)
    try:
        assert client.lrange(Keys.history("u1"), 0, -1) == [b"i1"]
    finally:
        client.close()


def test_a_wrong_password_is_refused(tls_redis: TlsRedis, pki: Pki) -> None:
    settings = _settings(f"rediss://:wrong@{HOST}:{tls_redis.port}/0", pki.ca_cert)
    with pytest.raises(AuthenticationError):
        asyncio.run(_ping(settings.redis_connection_url))


def test_redis_certificate_must_chain_to_the_configured_ca(
    tls_redis: TlsRedis, foreign_pki: Pki
) -> None:
    settings = _settings(f"rediss://:{PASSWORD}@{HOST}:{tls_redis.port}/0",
                         foreign_pki.ca_cert)
    with pytest.raises(RedisConnectionError):
        asyncio.run(_ping(settings.redis_connection_url))


def test_plaintext_does_not_reach_a_tls_only_redis(tls_redis: TlsRedis) -> None:
    with pytest.raises(RedisConnectionError):
        asyncio.run(_ping(f"redis://:{PASSWORD}@{HOST}:{tls_redis.port}/0"))


def test_a_ca_needs_a_rediss_url(pki: Pki) -> None:
    with pytest.raises(SettingsError, match="needs a rediss:// RECSYS_REDIS_URL"):
        _settings(f"redis://{HOST}:6379/0", pki.ca_cert)


def test_the_url_and_its_password_are_never_printed() -> None:
    settings = _settings(f"rediss://:{PASSWORD}@{HOST}:6380/0", None)
    assert PASSWORD not in repr(settings)
