"""Static checks of what ships (images, manifests, observability, the pipeline), offline.

Each check runs a real tool: found in the project's environments (.venv, .venv-tools) or on
PATH. A missing tool skips its checks with a reason naming it, or fails them when
RECSYS_STATIC_STRICT=1 (tox -e static): the pipeline must never pass a check it did not run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.core.names import SERVICE_NAMES

REPO = Path(__file__).resolve().parents[2]
TOOL_DIRS = (REPO / ".venv" / "bin", REPO / ".venv-tools" / "bin")
OVERLAYS = ("dev", "prod")
SERVICES = tuple(SERVICE_NAMES)


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


@pytest.fixture(scope="session")
def kubectl() -> str:
    return find_tool("kubectl", "kubectl, which renders kustomize overlays: apt or the "
                                "Kubernetes release")


@pytest.fixture(scope="session")
def rendered(kubectl: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every overlay rendered by `kubectl kustomize`, one file each."""
    out = tmp_path_factory.mktemp("rendered")
    paths = {}
    for overlay in OVERLAYS:
        path = out / f"{overlay}.yaml"
        path.write_text(check([kubectl, "kustomize", f"manifests/overlays/{overlay}"]))
        paths[overlay] = path
    return paths


@pytest.fixture(scope="session")
def objects(rendered: dict[str, Path]) -> dict[str, list[dict[str, Any]]]:
    return {overlay: [o for o in yaml.safe_load_all(path.read_text()) if o]
            for overlay, path in rendered.items()}
