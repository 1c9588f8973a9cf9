"""What each image carries, read from the built image: exactly its lock file's packages and
the services.* packages its service imports; nothing another service needs, and nothing of
how the build reached PyPI."""

from __future__ import annotations

import re

import pytest

from scripts.images.build import Contents, contents
from scripts.images.context import REPO, SERVICES, service_packages
from scripts.images.podman import podman

pytestmark = pytest.mark.images

PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", re.MULTILINE)


@pytest.fixture(scope="module")
def carried(images: dict[str, str]) -> dict[str, Contents]:
    return {service: contents(ref) for service, ref in images.items()}


def locked(service: str) -> dict[str, str]:
    text = (REPO / "requirements" / f"{service}.txt").read_text()
    return {re.sub(r"[-_.]+", "-", name).lower(): version for name, version in PIN.findall(text)}


@pytest.mark.parametrize("service", SERVICES)
def test_an_image_holds_its_lock_and_its_service_packages_only(
        carried: dict[str, Contents], service: str) -> None:
    assert carried[service].distributions == locked(service)
    assert set(carried[service].packages) == service_packages(service)


def test_the_ingest_image_has_no_torch(carried: dict[str, Contents]) -> None:
    assert "torch" in carried["trainer"].distributions  # what the check looks for
    assert "torch" not in carried["ingest"].distributions


def test_the_recommender_image_has_no_trainer_code_and_no_mlflow(
        carried: dict[str, Contents]) -> None:
    assert "trainer" in carried["trainer"].packages
    assert "mlflow-skinny" in carried["trainer"].distributions
    assert "trainer" not in carried["recommender"].packages
    assert not [name for name in carried["recommender"].distributions if "mlflow" in name]


@pytest.mark.parametrize("service", SERVICES)
def test_the_builds_pip_sources_stay_out_of_the_image(images: dict[str, str],
                                                       service: str) -> None:
    # The CA bundle, the wheel folder and the index the build used were mounts and build
    # arguments of the build stage: neither the image's history nor its settings name them.
    history = podman("history", "--no-trunc", "--format", "{{.CreatedBy}}", images[service])
    settings = podman("image", "inspect", "--format", "{{json .Config}}", images[service])
    for trace in ("PIP_CERT", "PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "host-ca", "torch-wheels"):
        assert trace not in history + settings
