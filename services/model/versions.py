"""Registered versions of the model in MLflow (`recsys.model.v1.ModelVersion`).

The trainer registers each version with its held-out metrics and dataset lineage as tags
(`metrics.<name>`, `lineage.<field>`) and its artifact's SHA-256, so anyone who reads a version
(the recommender, the trainer's `ListModelVersions`) learns them without the run, and the
recommender can tell that what it downloaded is what was registered. The model is one `.npz`
logged as a plain artifact under `model/` of the run (see DESIGN.md: no MLflow flavour).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from services.model.lineage import Lineage

CHAMPION = "champion"
ARTIFACT_DIR = "model"
ARTIFACT_FILE = "model.npz"
METRIC_TAG = "metrics."
LINEAGE_TAG = "lineage."
# The SHA-256 of the version's ARTIFACT_FILE, recorded by the trainer when it registers the
# version; the recommender serves a download only if it has this hash.
ARTIFACT_SHA256_TAG = "recsys.artifact_sha256"
# Who last pointed the champion alias at the version through PromoteModelVersion.
PROMOTED_BY_TAG = "recsys.promoted_by"


@dataclass(frozen=True)
class VersionInfo:
    """One registered version, with what its tags say about it.

    `source` is where MLflow keeps the version's files (the run's `model/` directory, an
    `mlflow-artifacts:/...` URI when the server proxies artifacts).
    """

    version: str
    model_name: str
    aliases: tuple[str, ...]
    run_id: str
    source: str
    metrics: Mapping[str, float]
    lineage: Lineage | None
    created_at_ms: int
    artifact_sha256: str = ""  # ARTIFACT_SHA256_TAG; "" for a version registered without it


def version_tags(metrics: Mapping[str, float], lineage: Lineage) -> dict[str, str]:
    """The tags that describe a version: held-out metrics and the lineage of its data."""
    tags = {f"{METRIC_TAG}{k}": repr(float(v)) for k, v in metrics.items()}
    for key, value in lineage.as_dict().items():
        tags[f"{LINEAGE_TAG}{key}"] = json.dumps(value) if isinstance(value, dict) else str(value)
    tags["recsys.artifact"] = f"{ARTIFACT_DIR}/{ARTIFACT_FILE}"
    return tags


def parse_tags(tags: Mapping[str, str]) -> tuple[dict[str, float], Lineage | None]:
    """The metrics and lineage `version_tags` wrote; no lineage for a version that lacks it."""
    metrics = {k.removeprefix(METRIC_TAG): float(v) for k, v in tags.items()
               if k.startswith(METRIC_TAG)}
    fields = {k.removeprefix(LINEAGE_TAG): v for k, v in tags.items()
              if k.startswith(LINEAGE_TAG)}
    try:
        fields["partition_offsets"] = json.loads(fields["partition_offsets"])
        lineage = Lineage.from_dict(fields)
    except (KeyError, ValueError, TypeError):  # a version registered by something else
        lineage = None
    return metrics, lineage
