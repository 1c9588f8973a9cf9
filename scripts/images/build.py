"""Builds the service images with podman from their contexts, and says what each carries.

The build reaches PyPI the way this machine does: through its CA bundle (a network that
re-signs TLS needs it) and, for torch's CPU build, through the wheel folder of its pip
configuration when it has one (scripts/torch_wheels.py). Both are mounted into the build
and named by build arguments; neither ends up in an image.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from scripts import torch_wheels
from scripts.images import base, podman
from scripts.images.context import SERVICES, assemble

# The Dockerfile's default BASE (python:3.11-slim pinned by digest), where a registry is
# reachable; otherwise the base scripts/images/base.py makes. RECSYS_IMAGES_BASE chooses.
PUBLISHED = "published"
LOCAL = "local"
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
# A build installs torch (hundreds of MB) on a shared machine: minutes, not hours.
BUILD_TIMEOUT_S = 1800
# Lists what an image carries: its Python distributions and services.* packages.
_CONTENTS = """
import importlib.metadata as m, json, pathlib, re
print(json.dumps({
    "distributions": {re.sub(r"[-_.]+", "-", d.metadata["Name"]).lower(): d.version
                      for d in m.distributions()},
    "packages": sorted(p.parent.name for p in pathlib.Path("/app/services").glob("*/__init__.py")),
}))
"""


def image(service: str) -> str:
    """The image's name: recsys-<service>:dev, as the dev overlay and docker-compose.yml name
    it (podman keeps local images under localhost/)."""
    return f"localhost/recsys-{service}:dev"


def default_base() -> str:
    return os.environ.get("RECSYS_IMAGES_BASE", LOCAL)


def pip_sources() -> list[str]:
    """podman build options that let pip in the build reach what pip here reaches."""
    options: list[str] = []
    if HOST_CA.is_file():
        options += ["--volume", f"{HOST_CA}:/run/host-ca.pem:ro",
                    "--build-arg", "PIP_CERT=/run/host-ca.pem"]
    wheel = torch_wheels.local_wheel(torch_wheels.pinned_version())
    if wheel:
        options += ["--volume", f"{wheel.parent}:/run/torch-wheels:ro",
                    "--build-arg", "PIP_FIND_LINKS=/run/torch-wheels",
                    "--build-arg", "PIP_EXTRA_INDEX_URL="]
    return options


def build_options(service: str, *, base_image: str) -> list[str]:
    """`podman build` options for `service` on `base_image` (LOCAL, PUBLISHED or a
    reference), made first when it is LOCAL and missing."""
    base_args = []
    if base_image != PUBLISHED:
        base_ref = base.ensure_base() if base_image == LOCAL else base_image
        base_args = ["--build-arg", f"BASE={base_ref}"]
    # Docker's format keeps the HEALTHCHECK (OCI's has none), for Compose.
    return ["--format", "docker", "--build-arg", f"SERVICE={service}", *base_args,
            *pip_sources()]


def build(service: str, *, base_image: str) -> str:
    """Build `service`'s image from its context; its reference."""
    context = assemble(service)
    podman.run("build", "--tag", image(service), *build_options(service, base_image=base_image),
               str(context), timeout=BUILD_TIMEOUT_S)
    return image(service)


@dataclass(frozen=True)
class Contents:
    """What an image carries."""

    size_bytes: int
    packages: list[str]  # services.* packages
    distributions: dict[str, str]  # Python distribution (normalised name) -> version


def contents(ref: str) -> Contents:
    size = int(podman.podman("image", "inspect", "--format", "{{.Size}}", ref).strip())
    listed = json.loads(podman.podman("run", "--rm", "--network", "none", "--entrypoint",
                                      "python", ref, "-c", _CONTENTS))
    return Contents(size, listed["packages"], listed["distributions"])


def describe(service: str, carried: Contents) -> str:
    names = ", ".join(f"{name} {version}"
                      for name, version in sorted(carried.distributions.items()))
    return (f"{image(service)}: {carried.size_bytes / 1e6:,.0f} MB; services packages: "
            f"{', '.join(carried.packages)}; {len(carried.distributions)} Python "
            f"distributions: {names}")


def build_all(services: tuple[str, ...] = SERVICES, *, base_image: str) -> dict[str, str]:
    """Build each service's image, then print its size and what it carries."""
    built = {service: build(service, base_image=base_image) for service in services}
    for service, ref in built.items():
        print(describe(service, contents(ref)), flush=True)
    return built
