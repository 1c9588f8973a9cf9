"""What importing the model package and the recommender loads, in a fresh interpreter: the
recommender runs without MLflow's client or the trainer installed, the model package without
torch either."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.support.paths import REPO

MODEL_MODULES = [f"services.model.{path.stem}" for path in
                 sorted((REPO / "services" / "model").glob("*.py")) if path.stem != "__init__"]
LOADED = """
import importlib, json, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
print(json.dumps(sorted(sys.modules)))
"""


def loaded_by(*modules: str) -> set[str]:
    """The top-level and services.* modules loaded by importing `modules`."""
    pythonpath = os.pathsep.join([str(REPO), str(REPO / "gen" / "python")])
    result = subprocess.run([sys.executable, "-c", LOADED, *modules], capture_output=True,
                            text=True, check=True, timeout=120, cwd=REPO,
                            env={**os.environ, "PYTHONPATH": pythonpath})
    names = json.loads(result.stdout)
    return {name.split(".")[0] for name in names} | {
        ".".join(name.split(".")[:2]) for name in names if name.startswith("services.")}


@pytest.mark.parametrize(("modules", "forbidden"), [
    (MODEL_MODULES, {"mlflow", "torch", "services.trainer", "services.recommender",
                     "services.ingest"}),
    (["services.recommender.app"], {"mlflow", "services.trainer"}),
])
def test_imports_stay_on_their_side_of_the_contract(modules: list[str],
                                                    forbidden: set[str]) -> None:
    assert MODEL_MODULES
    loaded = loaded_by(*modules)
    assert loaded & forbidden == set()
    assert "services.model" in loaded
