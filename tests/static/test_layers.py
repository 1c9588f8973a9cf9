"""The import layers (pyproject.toml's [tool.importlinter] contracts, run by `tox -e lint`): in
a copy of the code, each contract catches an import added to break it, and an unmodified copy
keeps it."""

from __future__ import annotations

import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from tests.support.paths import REPO
from tests.support.tools import find_tool

CONTRACTS = {contract["id"]: contract["name"] for contract in tomllib.loads(
    (REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]}

# Contract id -> a module (made if missing) and a package whose import breaks the contract there.
BREAKS = {
    "core": ("services/core/errors.py", "services.ingest"),
    "services": ("services/ingest/validation.py", "services.trainer"),
    "model": ("services/model/__init__.py", "services.trainer"),
    "harness": ("services/edge/render.py", "scripts.localstack"),
    "generated": ("gen/python/recsys/events/v1/interaction_pb2.py", "services.core"),
}


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    """services/, scripts/, gen/python and pyproject.toml, where lint-imports finds them first."""
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(REPO / "services", tmp_path / "services", ignore=ignore)
    shutil.copytree(REPO / "scripts", tmp_path / "scripts", ignore=ignore)
    shutil.copytree(REPO / "gen" / "python", tmp_path / "gen" / "python", ignore=ignore)
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    return tmp_path


def lint_imports(root: Path, contract: str) -> subprocess.CompletedProcess[str]:
    tool = find_tool("lint-imports", "PyPI import-linter, in the dev extra")
    # COLUMNS: wide enough that no contract's name is wrapped in the report.
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{root}:{root / 'gen' / 'python'}",
           "COLUMNS": "200"}
    return subprocess.run([tool, "--no-cache", "--contract", contract], cwd=root, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def test_every_contract_has_a_breaking_import_here() -> None:
    assert BREAKS.keys() == CONTRACTS.keys()


@pytest.mark.parametrize("contract", sorted(BREAKS))
def test_a_contract_catches_an_import_that_breaks_it(copy: Path, contract: str) -> None:
    path, imported = BREAKS[contract]
    module = copy / path
    module.parent.mkdir(exist_ok=True)
    with module.open("a") as source:
        source.write(f"\nimport {imported}\n")
    result = lint_imports(copy, contract)
    assert result.returncode == 1, result.stdout + result.stderr
    importer = path.removesuffix(".py").removesuffix("/__init__").removeprefix("gen/python/")
    assert f"{CONTRACTS[contract]} BROKEN" in result.stdout
    assert f"{importer.replace('/', '.')} -> {imported}" in result.stdout


@pytest.mark.parametrize("contract", sorted(BREAKS))
def test_an_unmodified_copy_keeps_each_contract(copy: Path, contract: str) -> None:
    result = lint_imports(copy, contract)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{CONTRACTS[contract]} KEPT" in result.stdout
