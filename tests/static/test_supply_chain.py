"""The pinned supply chain: every Python package locked with its hashes (requirements/, made
by scripts/lock.sh) and installed only from the locks; npm only from package-lock.json; every
third-party image pinned by digest, and the project's own deployed by digest only."""

from __future__ import annotations

import re
import tomllib
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import Version

from tests.support.manifests import SERVICES, pod_spec, workloads
from tests.support.paths import REPO

LOCKS = REPO / "requirements"
PINNED = re.compile(r"^(?P<name>[A-Za-z0-9][\w.-]*)==(?P<version>\S+)(?P<rest>.*)$")
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
# Third-party images whose digest nobody could look up yet: this project's machines reach no
# registry, and no public record of these digests was found. Pin each (README, Deployment:
# `skopeo inspect --raw docker://IMAGE | sha256sum`) and remove it here; a waiver that no
# longer matches an image fails the test.
UNPINNED = {
    "envoyproxy/envoy:v1.40.0": "no registry reachable when the images were pinned",
    "ghcr.io/mlflow/mlflow:v3.17.0": "no registry reachable when the images were pinned",
    "ghcr.io/mlflow/mlflow:v3.17.0-full": "no registry reachable when the images were pinned",
}
OWN_IMAGE = re.compile(r"(^|/)recsys-(ingest|trainer|recommender)([:@]|$)")


def lock(name: str) -> dict[NormalizedName, Version]:
    """A lock file's pins, by canonical name; each entry must carry at least one hash."""
    text = (LOCKS / f"{name}.txt").read_text()
    entries = re.split(r"\n(?=\S)", "\n".join(
        line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")))
    pins = {}
    for entry in entries:
        match = PINNED.match(entry.replace("\\\n", " "))
        assert match, f"requirements/{name}.txt: not an exact pin: {entry!r}"
        assert re.search(r"--hash=sha256:[0-9a-f]{64}", match["rest"]), (
            f"requirements/{name}.txt: {match['name']} has no hash")
        pins[canonicalize_name(match["name"])] = Version(match["version"])
    return pins


def project() -> dict[str, Any]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def assert_locked(requirements: list[str], pins: dict[NormalizedName, Version],
                  where: str) -> None:
    for line in requirements:
        requirement = Requirement(line)
        if canonicalize_name(requirement.name) == canonicalize_name(project()["project"]["name"]):
            continue  # the `all` extra: the others, listed on their own
        pinned = pins.get(canonicalize_name(requirement.name))
        assert pinned is not None, f"{where}: {requirement.name} is not locked (scripts/lock.sh)"
        assert requirement.specifier.contains(pinned, prereleases=True), (
            f"{where}: {requirement.name}=={pinned} is outside {requirement.specifier} "
            "(scripts/lock.sh)")


def test_the_development_lock_has_every_requirement_of_the_project() -> None:
    meta = project()
    extras = meta["project"]["optional-dependencies"].values()
    everything = [*meta["project"]["dependencies"], *(r for extra in extras for r in extra),
                  *meta["build-system"]["requires"], "pip"]
    assert_locked(everything, lock("all"), "requirements/all.txt")


@pytest.mark.parametrize("service", SERVICES)
def test_an_images_lock_has_its_services_requirements_at_the_development_versions(
        service: str) -> None:
    meta = project()["project"]
    pins = lock(service)
    assert_locked([*meta["dependencies"], *meta["optional-dependencies"][service]], pins,
                  f"requirements/{service}.txt")
    everything = lock("all")
    assert {name: version for name, version in pins.items()
            if everything.get(name) != version} == {}


def test_the_tools_lock_pins_checkov() -> None:
    assert_locked((LOCKS / "checkov.in").read_text().split(), lock("checkov"),
                  "requirements/checkov.txt")


def test_torch_is_locked_as_the_cpu_build_and_only_where_it_is_used() -> None:
    torch = canonicalize_name("torch")
    for name in ("all", "trainer", "recommender"):
        assert lock(name)[torch].local == "cpu", name  # PyPI's torch is a CUDA build
    assert torch not in lock("ingest")


def test_setup_installs_python_packages_only_from_the_locks() -> None:
    setup = (REPO / "scripts" / "setup.sh").read_text()
    installs = [line.strip() for line in setup.splitlines()
                if re.search(r"\bpip install\b", line)
                and not line.lstrip().startswith(("#", "log "))]
    assert installs
    for install in installs:
        from_lock = re.search(r"--require-hashes .*-r requirements/\w+\.txt$", install)
        # The project itself, editable: no dependency and no build requirement is fetched.
        itself = install.endswith("pip install -q --no-deps --no-build-isolation -e .")
        assert from_lock or itself, install


def test_npm_installs_only_from_package_lock() -> None:
    workflow = REPO / ".github" / "workflows" / "mlops-pipeline.yml"
    for path in (REPO / "scripts" / "setup.sh", workflow):
        assert not re.search(r"\bnpm (install|i|add|update)\b", path.read_text()), path
    assert "npm ci" in (REPO / "scripts" / "setup.sh").read_text()


def images_in(objects: list[dict[str, Any]]) -> set[str]:
    return {container["image"] for workload in workloads(objects)
            for key in ("initContainers", "containers")
            for container in pod_spec(workload).get(key, [])}


def compose_images() -> set[str]:
    services = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    return {s["image"] for s in services.values() if "build" not in s}


def test_third_party_images_are_pinned_by_digest(objects: dict[str, list[dict[str, Any]]]) -> None:
    third_party = {image for overlay in objects.values() for image in images_in(overlay)
                   if not OWN_IMAGE.search(image)} | compose_images()
    unpinned = {image for image in third_party if not DIGEST.search(image)}
    assert unpinned == set(UNPINNED), "pin these by digest, or (with a reason) waive them"
    assert all(reason.strip() for reason in UNPINNED.values())


def test_the_projects_images_have_no_tag_to_fall_back_on_in_prod(
        objects: dict[str, list[dict[str, Any]]]) -> None:
    own = {image for image in images_in(objects["prod"]) if OWN_IMAGE.search(image)}
    assert own == {f"ghcr.io/recsys-mesh/recsys-{service}" for service in SERVICES}
