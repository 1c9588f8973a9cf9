"""Real infrastructure for integration tests, on free loopback ports in a temporary directory.

Each fixture starts its component, waits until it answers, and stops it (process group and
all) when its scope ends, even if a test failed; `pytest_sessionfinish` sweeps whatever is
left, and an atexit hook in `components` is the last resort. Under CI=true a skipped test
fails the run (`tests/support/ci_skips.py`). A run that takes in tests/integration or
tests/e2e happens in a network namespace with only the loopback interface, and fails if
anything tried to reach beyond it (`tests/support/loopback.py`).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from scripts.localstack.components import (
    Component,
    MlflowServer,
    RedisServer,
    SeaweedS3,
    TansuBroker,
    stop_all,
)
from tests.support import loopback
from tests.support.ci_skips import (  # noqa: F401 (hooks, found by name)
    pytest_make_collect_report,
    pytest_runtest_makereport,
)

C = TypeVar("C", bound=Component)
TESTS = Path(__file__).resolve().parent

_startups: list[tuple[str, float]] = []
_buckets = itertools.count()


def pytest_configure(config: pytest.Config) -> None:
    # The MLflow client in this process reports telemetry unless told not to.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "true")
    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    if _starts_servers(config):
        loopback.isolate()


def _starts_servers(config: pytest.Config) -> bool:
    """Whether the run takes in the integration or end-to-end tests (a path inside one of
    them, or above them: `pytest tests`)."""
    suites = [TESTS / "integration", TESTS / "e2e"]
    paths = [Path(config.invocation_params.dir, arg.split("::")[0]).resolve()
             for arg in config.args]
    return any(path.is_relative_to(suite) or suite.is_relative_to(path)
               for path in paths for suite in suites)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    stop_all()
    if loopback.isolated() and (attempts := loopback.unexpected_attempts()):
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_sep("=", f"{attempts} attempts to reach beyond loopback "
                                    "(tests/support/loopback.py)", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if loopback.isolated():
        terminalreporter.write_line(
            f"network: only loopback ({', '.join(loopback.interfaces())}); attempts beyond it: "
            f"{loopback.unexpected_attempts()} (and {loopback.attempts_beyond_loopback()} with "
            "the self-test's own)")
    if _startups:
        terminalreporter.write_sep("-", "component start-up (start to ready)")
        for name, seconds in _startups:
            terminalreporter.write_line(f"{name:<12} {seconds:6.2f} s")


def running(component: C, timeout: float) -> Iterator[C]:
    """Start `component`, yield it once ready, always stop it."""
    try:
        component.start().wait_ready(timeout)
        assert component.startup_s is not None
        _startups.append((component.name, component.startup_s))
        yield component
    finally:
        component.stop()


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    """SeaweedFS S3 (weed mini); tests create their own buckets."""
    yield from running(SeaweedS3(tmp_path_factory.mktemp("seaweed")), timeout=60)


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TansuBroker]:
    """Tansu on memory:// storage: fast, lost on stop. Use unique topic names per test."""
    yield from running(TansuBroker(tmp_path_factory.mktemp("tansu")), timeout=30)


@pytest.fixture
def durable_kafka(seaweed: SeaweedS3, tmp_path: Path) -> Iterator[TansuBroker]:
    """Tansu on its own S3 bucket, per test, since tests kill and restart it."""
    broker = TansuBroker(tmp_path / "tansu", storage=seaweed, bucket=f"tansu-{next(_buckets)}")
    yield from running(broker, timeout=30)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    yield from running(RedisServer(tmp_path_factory.mktemp("redis")), timeout=20)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """MLflow tracking server; artifacts go through it over HTTP (mlflow-artifacts:/)."""
    yield from running(MlflowServer(tmp_path_factory.mktemp("mlflow")), timeout=90)
