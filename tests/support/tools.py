"""The offline checking tools of tests/static: found in the project's environments (.venv,
.venv-tools) or on PATH, and run in the repository.

A missing tool skips its checks with a reason naming it, or fails them when
RECSYS_STATIC_STRICT=1 (tox -e static): the pipeline must never pass a check it did not run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence

import pytest

from tests.support.paths import REPO

TOOL_DIRS = (REPO / ".venv" / "bin", REPO / ".venv-tools" / "bin")


def find_tool(name: str, source: str) -> str:
    """Path of tool `name`; skip (or fail, in strict mode) naming where it comes from."""
    for directory in TOOL_DIRS:
        candidate = directory / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    message = f"{name} is not installed ({source})"
    if os.environ.get("RECSYS_STATIC_STRICT") == "1":
        pytest.fail(message)
    pytest.skip(message)


def tool_env(**extra: str) -> dict[str, str]:
    """The environment for a tool: the project's tool directories first on PATH (actionlint
    finds shellcheck there)."""
    path = os.pathsep.join([*(str(d) for d in TOOL_DIRS), os.environ.get("PATH", "")])
    return {**os.environ, "PATH": path, **extra}


def run(args: Sequence[str], *, env: dict[str, str] | None = None,
        timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), cwd=REPO, env=env or tool_env(), capture_output=True,
                          text=True, timeout=timeout, check=False)


def check(args: Sequence[str], *, env: dict[str, str] | None = None,
          timeout: float = 300) -> str:
    """Run a tool; fail with its output unless it exits 0. Returns its stdout."""
    result = run(args, env=env, timeout=timeout)
    assert result.returncode == 0, (
        f"{' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result.stdout
