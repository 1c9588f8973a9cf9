"""Static checks of what ships (images, manifests, observability, the pipeline), offline.

Each check runs a real tool (tests/support/tools.py): a missing one skips its checks with a
reason naming it, or fails them when RECSYS_STATIC_STRICT=1 (tox -e static).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.manifests import OVERLAYS
from tests.support.tools import check, find_tool


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
