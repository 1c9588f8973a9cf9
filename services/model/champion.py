"""Read-only access to the registered model's champion, over MLflow's REST API.

Serving needs two things from MLflow: the version the `champion` alias names (with its tags)
and that version's `.npz`. Both are one GET each, so this speaks HTTP with `requests` instead
of going through MLflow's client: no `mlflow` import (the recommender's image has no MLflow),
no process-wide environment settings, and a timeout and retry policy of its own.

The file comes through the tracking server's artifact proxy (`mlflow server --serve-artifacts`,
as the local stack, Compose and Kubernetes run it), so a reader needs access to MLflow only,
never to the artifact store behind it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from services.core.errors import FailedPrecondition, Unavailable
from services.model.artifact import ArtifactRefused, ModelArtifact, sha256_of
from services.model.versions import ARTIFACT_FILE, ARTIFACT_SHA256_TAG, CHAMPION, VersionInfo

ALIAS_PATH = "/api/2.0/mlflow/registered-models/alias"
ARTIFACTS_PATH = "/api/2.0/mlflow-artifacts/artifacts/"
PROXIED_SCHEME = "mlflow-artifacts"
# What MLflow answers when the registered model (404) or its alias (400) does not exist.
_NO_CHAMPION = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")
_CHUNK_BYTES = 1 << 20


def mlflow_session(*, retries: int, auth: tuple[str, str] | None = None) -> requests.Session:
    """The HTTP session for MLflow's REST API, built in this one place, with the reader's
    credentials (`auth`: user name and password, for MLflow's basic-auth app) if given.

    A GET that fails to connect or gets 429/5xx is retried up to `retries` times with urllib3's
    exponential backoff (factor 1 s, as MLflow's own client is configured in the trainer).
    """
    retry = Retry(total=retries, backoff_factor=1, status_forcelist=(429, 500, 502, 503, 504),
                  allowed_methods=frozenset({"GET"}), raise_on_status=False)
    session = requests.Session()
    session.auth = auth
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


class ChampionReader:
    """The champion of one registered model: which version it is, and its artifact.

    Blocking calls (the recommender makes them on its poller thread). An unreachable or failing
    MLflow becomes `Unavailable` naming the server; every request has `timeout_s` to connect
    and between bytes received.
    """

    def __init__(self, *, tracking_uri: str, model_name: str, timeout_s: float,
                 session: requests.Session) -> None:
        self.tracking_uri = tracking_uri.rstrip("/")
        self.model_name = model_name
        self._timeout_s = timeout_s
        self._session = session

    def champion(self) -> VersionInfo | None:
        """The version the alias names; None while the model or its alias does not exist."""
        with self._errors("look up the champion"):
            response = self._session.get(
                f"{self.tracking_uri}{ALIAS_PATH}",
                params={"name": self.model_name, "alias": CHAMPION}, timeout=self._timeout_s)
            if response.status_code in (400, 404) and _mlflow_error(response)[0] in _NO_CHAMPION:
                return None
            self._check(response, "look up the champion")
            return _version_info(response.json()["model_version"])

    def artifact_url(self, version: VersionInfo) -> str:
        """Where the artifact proxy serves the version's `.npz`."""
        scheme, _, path = version.source.partition(":")
        # mlflow-artifacts://host/... would name another server than this reader's.
        if scheme != PROXIED_SCHEME or not path.startswith("/") or path.startswith("//"):
            raise FailedPrecondition(
                f"model {version.model_name} version {version.version} is stored at "
                f"{version.source!r}: the recommender downloads only through MLflow's artifact "
                f"proxy, from {PROXIED_SCHEME}:/ sources (run mlflow server --serve-artifacts)")
        return f"{self.tracking_uri}{ARTIFACTS_PATH}{quote(path.strip('/'))}/{ARTIFACT_FILE}"

    def download(self, version: VersionInfo, dst: Path) -> Path:
        """Stream the version's `.npz` into the directory `dst`; its path."""
        url = self.artifact_url(version)
        path = dst / ARTIFACT_FILE
        action = f"download version {version.version}"
        with self._errors(action), self._session.get(url, stream=True,
                                                     timeout=self._timeout_s) as response:
            self._check(response, action)
            with path.open("wb") as file:
                for chunk in response.iter_content(_CHUNK_BYTES):
                    file.write(chunk)
        return path

    def load(self, version: VersionInfo, dst: Path) -> ModelArtifact:
        """Download the version's artifact into `dst`, check that it is the file the trainer
        registered (its SHA-256 tag) and load it. ArtifactRefused: another file (a
        replaced or corrupted artifact, a version registered without a hash) or no valid
        model."""
        path = self.download(version, dst)
        if not version.artifact_sha256:
            raise ArtifactRefused("checksum", f"version {version.version} has no "
                                              f"{ARTIFACT_SHA256_TAG} tag: nothing to check "
                                              "its artifact against")
        if sha256_of(path) != version.artifact_sha256:
            raise ArtifactRefused("checksum", f"version {version.version}: the downloaded "
                                              "artifact's SHA-256 is not the registered one")
        try:
            return ModelArtifact.load(path)
        except Exception as exc:  # whatever numpy raises on a damaged file: not a model
            raise ArtifactRefused("invalid", f"version {version.version}: {exc}") from exc

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except requests.RequestException as exc:
            raise Unavailable(f"MLflow at {self.tracking_uri} failed to {action}: {exc}") from exc

    def _check(self, response: requests.Response, action: str) -> None:
        if not response.ok:
            code, message = _mlflow_error(response)
            detail = f"{code}: {message}" if code else response.reason
            raise Unavailable(f"MLflow at {self.tracking_uri} failed to {action}: HTTP "
                              f"{response.status_code} {detail}")


def _mlflow_error(response: requests.Response) -> tuple[str, str]:
    """The error code and message of MLflow's JSON error body ("", "" for any other body)."""
    try:
        body = response.json()
    except ValueError:
        return "", ""
    if not isinstance(body, dict):
        return "", ""
    return str(body.get("error_code", "")), str(body.get("message", ""))


def _version_info(version: Mapping[str, Any]) -> VersionInfo:
    """A ModelVersion as MLflow's REST API writes it (empty fields are left out)."""
    return VersionInfo.from_tags(
        {tag["key"]: tag["value"] for tag in version.get("tags", [])},
        version=str(version["version"]),
        model_name=str(version["name"]),
        aliases=tuple(sorted(version.get("aliases", []))),
        run_id=str(version.get("run_id", "")),
        source=str(version.get("source", "")),
        created_at_ms=int(version.get("creation_timestamp", 0)),
    )
