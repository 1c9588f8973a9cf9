"""Model versions registered in a real MLflow the way a training job registers them (the
trainer's MlflowRegistry: a run, the `.npz` under `model/`, metrics and lineage as version
tags), for tests of what reads them: the champion reader and the recommender."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from pathlib import Path

from services.model.artifact import ModelArtifact
from services.model.lineage import Lineage
from services.model.versions import VersionInfo
from services.trainer.registry import MlflowRegistry

_jobs = itertools.count(1)

METRICS = {"ndcg_at_10": 0.25, "users_evaluated": 60.0}


def register(tracking_uri: str, model_name: str, artifact: ModelArtifact, workdir: Path, *,
             metrics: Mapping[str, float] = METRICS, lineage: Lineage | None = None,
             champion: bool = False) -> VersionInfo:
    """A new version of `model_name` holding `artifact`; the champion if told so. Without a
    `lineage`, one that matches the artifact."""
    job = f"job-{next(_jobs)}"
    path = workdir / job / "model.npz"
    path.parent.mkdir(parents=True)
    artifact.save(path)
    if lineage is None:
        rows = len(artifact.seen_indices)
        lineage = Lineage(topic="interactions", row_count=rows, content_hash="cd" * 32,
                          partition_offsets={0: rows}, user_count=artifact.n_users,
                          item_count=artifact.n_items)
    registry = MlflowRegistry(tracking_uri=tracking_uri, model_name=model_name,
                              experiment="model-tests")
    run_id = registry.start_run(job_id=job, params={}, lineage=lineage, tags={})
    version = registry.register(run_id, metrics=metrics, lineage=lineage, artifact=path,
                                hyperparameters={}, tags={"recsys.job_id": job})
    registry.end_run(run_id, "FINISHED")
    if champion:
        registry.set_champion(version.version)
    return version


def publish(tracking_uri: str, model_name: str, artifact: ModelArtifact, workdir: Path,
            **options: object) -> str:
    """`artifact` registered and made the champion; its version number."""
    return register(tracking_uri, model_name, artifact, workdir, champion=True,
                    **options).version  # type: ignore[arg-type]
