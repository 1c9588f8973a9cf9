"""MLflow's write side: the run of each job, the registered model's versions and its
"champion" alias, through MLflow's client.

What a version is made of (its tags, the artifact's place and hash) is the contract in
services.model.versions, which the recommender reads back. Any MLflow failure becomes
`Unavailable` (its details, the server's address among them, go to the log, not to clients);
an unknown version `NotFound`.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, Protocol

import requests
from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

from services.core.errors import InvalidArgument, NotFound, RecsysError, Unavailable
from services.model.artifact import sha256_of
from services.model.lineage import Lineage
from services.model.versions import (
    ARTIFACT_DIR,
    ARTIFACT_FILE,
    ARTIFACT_SHA256_TAG,
    CHAMPION,
    PROMOTED_BY_TAG,
    VersionInfo,
    version_tags,
)

log = logging.getLogger(__name__)

RunStatus = Literal["FINISHED", "FAILED", "KILLED"]


class ModelRegistry(Protocol):
    """What a training job needs from the registry (MlflowRegistry; fakes in unit tests)."""

    def start_run(self, *, job_id: str, params: Mapping[str, Any], lineage: Lineage,
                  tags: Mapping[str, str]) -> str: ...

    def log_metric(self, run_id: str, key: str, value: float, *, step: int) -> None: ...

    def log_values(self, run_id: str, *, params: Mapping[str, Any],
                   metrics: Mapping[str, float]) -> None: ...

    def log_trial(self, parent_run_id: str, *, number: int, params: Mapping[str, Any],
                  metrics: Mapping[str, float], pruned: bool) -> None: ...

    def log_dataset(self, run_id: str, *, source: str, digest: str, lineage: Lineage) -> None: ...

    def register(self, run_id: str, *, metrics: Mapping[str, float], lineage: Lineage,
                 hyperparameters: Mapping[str, float], artifact: Path,
                 tags: Mapping[str, str]) -> VersionInfo: ...

    def tag(self, run_id: str, version: str | None, tags: Mapping[str, str]) -> None: ...

    def end_run(self, run_id: str, status: RunStatus) -> None: ...

    def champion(self) -> VersionInfo | None: ...

    def set_champion(self, version: str) -> None: ...


def configure_mlflow_client(*, timeout_s: int, retries: int,
                            credentials: tuple[str, str] | None = None) -> None:
    """Set MLflow's client up for this process: call once, at start, before any MLflow call.

    MLflow's client reads its HTTP policy, credentials and telemetry switch only from
    environment variables, so this changes `os.environ` for the whole process, which is why
    it is a call of its own and not hidden in a constructor. Telemetry is switched off
    (nothing may leave loopback) and re-evaluated, since importing mlflow already created its
    client; the retry policy keeps an outage from stalling a job for MLflow's default four
    minutes; run URLs are not printed into the structured logs; `credentials` (user name,
    password) authenticate every request to MLflow's basic-auth app.
    """
    if credentials is not None:
        os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = (
            credentials)
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(timeout_s)
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(retries)
    os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] = "1"
    from mlflow.telemetry import set_telemetry_client

    set_telemetry_client()


class MlflowRegistry:
    """Blocking MLflow calls; run them off the event loop. Its HTTP policy is the process's
    (`configure_mlflow_client`)."""

    def __init__(self, *, tracking_uri: str, model_name: str, experiment: str) -> None:
        self.tracking_uri = tracking_uri
        self.model_name = model_name
        self._experiment = experiment
        self._client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except RecsysError:
            raise
        except (MlflowException, requests.RequestException, OSError) as exc:
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            log.warning("model registry failed", extra={
                "action": action, "tracking_uri": self.tracking_uri, "error": first_line})
            raise Unavailable(f"the model registry failed to {action}; see the trainer's "
                              "log for the cause") from exc

    # -- runs ------------------------------------------------------------------------------

    def start_run(self, *, job_id: str, params: Mapping[str, Any], lineage: Lineage,
                  tags: Mapping[str, str]) -> str:
        """Create the job's run with its parameters, lineage and tags; return its id."""
        with self._errors("start a run"):
            experiment = self._client.get_experiment_by_name(self._experiment)
            experiment_id = (experiment.experiment_id if experiment is not None
                             else self._client.create_experiment(self._experiment))
            run = self._client.create_run(
                experiment_id, run_name=f"train-{job_id}",
                tags={"recsys.job_id": job_id, **tags},
            )
            run_id = run.info.run_id
            lineage_params = {
                f"dataset.{k}": json.dumps(v) if isinstance(v, dict) else v
                for k, v in lineage.as_dict().items()
            }
            self._client.log_batch(run_id, params=[
                Param(k, str(v)) for k, v in sorted({**params, **lineage_params}.items())
            ])
            self._client.log_dict(run_id, lineage.as_dict(), "lineage.json")
        return run_id

    def log_metric(self, run_id: str, key: str, value: float, *, step: int) -> None:
        with self._errors("log a metric"):
            self._client.log_metric(run_id, key, value, timestamp=int(time.time() * 1000),
                                    step=step)

    def log_values(self, run_id: str, *, params: Mapping[str, Any],
                   metrics: Mapping[str, float]) -> None:
        """Add parameters (each is written once: MLflow keeps its first value) and metrics."""
        with self._errors("log to the run"):
            now = int(time.time() * 1000)
            self._client.log_batch(
                run_id, params=[Param(k, str(v)) for k, v in sorted(params.items())],
                metrics=[Metric(k, float(v), now, 0) for k, v in sorted(metrics.items())])

    def log_trial(self, parent_run_id: str, *, number: int, params: Mapping[str, Any],
                  metrics: Mapping[str, float], pruned: bool) -> None:
        """One trial of a job's search, as a run nested under the job's run (MLflow's UI
        shows it below its parent); a pruned trial ends KILLED."""
        with self._errors("log a search trial"):
            parent = self._client.get_run(parent_run_id)
            run = self._client.create_run(
                parent.info.experiment_id, run_name=f"trial-{number}",
                tags={"mlflow.parentRunId": parent_run_id, "recsys.trial": str(number),
                      "recsys.trial_pruned": str(pruned).lower()})
            self.log_values(run.info.run_id, params=params, metrics=metrics)
            self._client.set_terminated(run.info.run_id, "KILLED" if pruned else "FINISHED")

    def log_dataset(self, run_id: str, *, source: str, digest: str, lineage: Lineage) -> None:
        """The job's snapshot as the run's training dataset (MLflow's dataset inputs, the
        run page's "Datasets used"): `source` is its manifest's URI, the lineage its profile.
        """
        dataset_source = resolve_dataset_source(source)
        dataset = Dataset(name=f"{lineage.topic}-snapshot", digest=digest,
                          source_type=dataset_source._get_source_type(),
                          source=dataset_source.to_json(),
                          profile=json.dumps(lineage.as_dict(), sort_keys=True))
        with self._errors("log the run's dataset"):
            self._client.log_inputs(run_id, [DatasetInput(dataset, tags=[
                InputTag(MLFLOW_DATASET_CONTEXT, "training")])])

    def register(self, run_id: str, *, metrics: Mapping[str, float], lineage: Lineage,
                 hyperparameters: Mapping[str, float], artifact: Path,
                 tags: Mapping[str, str]) -> VersionInfo:
        """Log the evaluation and the model file to the run; register a new version of it
        tagged with its metrics, lineage, hyper-parameters, the file's SHA-256 and `tags`."""
        if artifact.name != ARTIFACT_FILE:
            raise ValueError(f"the model artifact must be named {ARTIFACT_FILE}")
        with self._errors("register the model"):
            now = int(time.time() * 1000)
            self._client.log_batch(run_id, metrics=[
                Metric(k, float(v), now, 0) for k, v in sorted(metrics.items())
            ])
            self._client.log_artifact(run_id, str(artifact), artifact_path=ARTIFACT_DIR)
            run = self._client.get_run(run_id)
            self._ensure_registered_model()
            version = self._client.create_model_version(
                self.model_name,
                source=f"{run.info.artifact_uri}/{ARTIFACT_DIR}",
                run_id=run_id,
                tags={**version_tags(metrics, lineage, hyperparameters),
                      ARTIFACT_SHA256_TAG: sha256_of(artifact), **tags},
            )
            return self._info(version, aliases=())

    def _ensure_registered_model(self) -> None:
        try:
            self._client.get_registered_model(self.model_name)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            self._client.create_registered_model(
                self.model_name, description="recsys mesh matrix-factorisation recommender")

    def tag(self, run_id: str, version: str | None, tags: Mapping[str, str]) -> None:
        """Record the gate's decision on the run (and the version, if there is one)."""
        with self._errors("tag the run"):
            self._client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
            if version is not None:
                for key, value in tags.items():
                    self._client.set_model_version_tag(self.model_name, version, key, value)

    def end_run(self, run_id: str, status: RunStatus) -> None:
        with self._errors("end the run"):
            self._client.set_terminated(run_id, status)

    # -- versions and the champion alias ---------------------------------------------------

    def champion(self) -> VersionInfo | None:
        with self._errors("look up the champion"):
            try:
                version = self._client.get_model_version_by_alias(self.model_name, CHAMPION)
            except MlflowException as exc:
                if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                    return None
                raise
            return self._info(version, aliases=(CHAMPION,))

    def set_champion(self, version: str) -> None:
        with self._errors("move the champion alias"):
            self._client.set_registered_model_alias(self.model_name, CHAMPION, version)

    def list_versions(self, limit: int) -> list[VersionInfo]:
        """Newest first, with their aliases (search results do not carry them)."""
        with self._errors("list model versions"):
            try:
                aliases = self._client.get_registered_model(self.model_name).aliases
            except MlflowException as exc:
                if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                    return []
                raise
            versions = self._client.search_model_versions(
                f"name = '{self.model_name}'", max_results=limit,
                order_by=["version_number DESC"],
            )
            by_version: dict[str, list[str]] = {}
            for alias, version in aliases.items():
                by_version.setdefault(str(version), []).append(alias)
            return [self._info(v, aliases=tuple(sorted(by_version.get(str(v.version), []))))
                    for v in versions]

    def promote(self, version: str, *, by: str) -> tuple[VersionInfo, str | None]:
        """Point champion at `version` on behalf of `by` (recorded on the version, and logged);
        return it and the version that was champion."""
        # ASCII only: str.isdigit() is true of other scripts' digits too ("٣"), which int()
        # reads but MLflow does not.
        if not (version.isascii() and version.isdigit()) or int(version) < 1:
            raise InvalidArgument("version", f"must be a version number such as \"3\", "
                                             f"got {version!r}")
        with self._errors("promote a version"):
            try:
                target = self._client.get_model_version(self.model_name, version)
            except MlflowException as exc:
                if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                    raise NotFound(
                        f"model {self.model_name} has no version {version}") from None
                raise
            previous = self.champion()
            self._client.set_registered_model_alias(self.model_name, CHAMPION, version)
            self._client.set_model_version_tag(self.model_name, version, PROMOTED_BY_TAG, by)
        before = previous.version if previous is not None else None
        log.info("champion moved", extra={"model": self.model_name, "version": version,
                                           "previous": before, "by": by})
        aliases = set(target.aliases or ()) | {CHAMPION}
        tags = {**(target.tags or {}), PROMOTED_BY_TAG: by}
        return self._info(target, aliases=tuple(sorted(aliases)), tags=tags), before

    def _info(self, version: Any, *, aliases: tuple[str, ...],
              tags: Mapping[str, str] | None = None) -> VersionInfo:
        return VersionInfo.from_tags(
            version.tags or {} if tags is None else tags,
            version=str(version.version),
            model_name=self.model_name,
            aliases=aliases,
            run_id=version.run_id or "",
            source=version.source or "",
            created_at_ms=int(version.creation_timestamp or 0),
        )
