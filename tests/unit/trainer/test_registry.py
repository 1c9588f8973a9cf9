"""MLflow's client set-up: explicit and process-wide, never a side effect of a constructor."""

from __future__ import annotations

import os

import pytest
from mlflow.telemetry.client import get_telemetry_client

from services.core.errors import InvalidArgument
from services.trainer.registry import MlflowRegistry, configure_mlflow_client

SETTINGS = ("MLFLOW_DISABLE_TELEMETRY", "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT",
            "MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
            "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR")


def test_a_registry_leaves_the_environment_alone() -> None:
    before = dict(os.environ)
    MlflowRegistry(tracking_uri="http://127.0.0.1:1", model_name="m", experiment="e")
    assert dict(os.environ) == before


def test_the_client_set_up_bounds_requests_and_turns_telemetry_off(
        monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SETTINGS:  # restored after the test
        monkeypatch.setenv(name, "unset")
    configure_mlflow_client(timeout_s=7, retries=3)
    assert {name: os.environ[name] for name in SETTINGS} == {
        "MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "7", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
    assert get_telemetry_client() is None


@pytest.mark.parametrize("version", ["\u0663", "\uff13", "0", "-1", "1.0", "", "v3"])
def test_only_ascii_version_numbers_are_promoted(version: str) -> None:
    """Other scripts' digits pass str.isdigit() and int(); MLflow would fail on them."""
    registry = MlflowRegistry(tracking_uri="http://127.0.0.1:1", model_name="m", experiment="e")
    with pytest.raises(InvalidArgument, match="version: must be a version number"):
        registry.promote(version, by="test")
