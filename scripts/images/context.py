"""Each service's build context, build/images/<service>/: the Dockerfile, the service's lock
file as requirements.txt, the generated contracts, and the services.* packages the service
imports, transitively (core, and model for the trainer and the recommender). No service
imports another's package, so no context, and no image, holds another service's code."""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

from services.core.names import SERVICE_NAMES

REPO = Path(__file__).resolve().parents[2]
SERVICES = tuple(SERVICE_NAMES)
CONTEXTS = REPO / "build" / "images"
_IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc")


def imported_packages(package: str, source: Path = REPO / "services") -> set[str]:
    """The services.* packages that the modules of services/<package> import (itself too,
    when one of its modules imports another by its full name)."""
    found: set[str] = set()
    for path in (source / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [f"{node.module}.{alias.name}" for alias in node.names]
            else:
                continue
            found |= {name.split(".")[1] for name in names
                      if name.startswith("services.") and (source / name.split(".")[1]).is_dir()}
    return found


def service_packages(service: str, source: Path = REPO / "services") -> set[str]:
    """The service's package and every services.* package it needs, transitively."""
    needed: set[str] = set()
    pending = {service}
    while pending:
        package = pending.pop()
        needed.add(package)
        pending |= imported_packages(package, source) - needed
    return needed


def assemble(service: str, contexts: Path = CONTEXTS) -> Path:
    """Lay out the build context of `service` under `contexts` (replacing an older one)."""
    if service not in SERVICES:
        raise ValueError(f"{service!r} is not a service: one of {', '.join(SERVICES)}")
    context = contexts / service
    shutil.rmtree(context, ignore_errors=True)
    context.mkdir(parents=True)
    shutil.copy2(REPO / "Dockerfile", context / "Dockerfile")
    shutil.copy2(REPO / "requirements" / f"{service}.txt", context / "requirements.txt")
    shutil.copytree(REPO / "gen" / "python", context / "gen" / "python", ignore=_IGNORED)
    (context / "services").mkdir()
    shutil.copy2(REPO / "services" / "__init__.py", context / "services")
    for package in sorted(service_packages(service)):
        shutil.copytree(REPO / "services" / package, context / "services" / package,
                        ignore=_IGNORED)
    return context
