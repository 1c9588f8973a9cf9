"""Under CI=true a skip fails the run (tests/support/ci_skips.py), through a real pytest run of
a tiny test file; outside CI it stays a skip, and an expected failure is never touched."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.paths import REPO

TESTS = '''
import pytest

def test_runs():
    pass

@pytest.mark.skip(reason="needs a thing this machine lacks")
def test_skipped():
    pass

def test_skips_itself():
    pytest.skip("no ss (iproute2)")

@pytest.mark.xfail(reason="a known bug", strict=True)
def test_expected_to_fail():
    assert False
'''


def run_pytest(tmp_path: Path, ci: str | None,
               source: str = TESTS) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_tiny.py").write_text(source)
    env = {k: v for k, v in os.environ.items() if k != "CI"} | {"PYTHONPATH": str(REPO)}
    if ci is not None:
        env["CI"] = ci
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.support.ci_skips", "-p", "no:cacheprovider",
         "-q", "-rA", "--rootdir", str(tmp_path), str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize("ci", [None, "false"])
def test_outside_ci_a_skip_stays_a_skip(tmp_path: Path, ci: str | None) -> None:
    result = run_pytest(tmp_path, ci)
    assert result.returncode == 0, result.stdout
    assert "1 passed, 2 skipped, 1 xfailed" in result.stdout


@pytest.mark.parametrize("ci", ["true", "1"])
def test_in_ci_each_skip_fails_with_its_reason(tmp_path: Path, ci: str) -> None:
    result = run_pytest(tmp_path, ci)
    assert result.returncode == 1, result.stdout
    assert "1 failed, 1 passed, 1 xfailed, 1 error" in result.stdout  # the marker: at set-up
    assert ("skipped under CI=true, where every test must run: needs a thing this machine lacks"
            in result.stdout)
    assert "skipped under CI=true, where every test must run: no ss (iproute2)" in result.stdout


def test_in_ci_a_module_skipped_at_collection_fails(tmp_path: Path) -> None:
    module = 'import pytest\npytest.skip("no broker here", allow_module_level=True)\n'
    result = run_pytest(tmp_path, "true", module)
    assert result.returncode != 0, result.stdout
    assert "skipped under CI=true, where every test must run: no broker here" in result.stdout
