"""Registered versions of the model in MLflow (`recsys.model.v1.ModelVersion`).

The trainer registers each version with its held-out metrics, dataset lineage and
hyper-parameters as tags (`metrics.<name>`, `lineage.<field>`, `hyperparameters.<name>`) and its
artifact's SHA-256, so anyone who reads a version (the recommender, the trainer's
`ListModelVersions`) learns them without the run, and the recommender can tell that what it
downloaded is what was registered. The model is one `.npz` logged as a plain artifact under
`model/` of the run (see DESIGN.md: no MLflow flavour).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from services.model.lineage import Lineage

CHAMPION = "champion"
ARTIFACT_DIR = "model"
ARTIFACT_FILE = "model.npz"
METRIC_TAG = "metrics."
LINEAGE_TAG = "lineage."
HYPERPARAMETER_TAG = "hyperparameters."
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
    hyperparameters: Mapping[str, float] = field(default_factory=dict)
    artifact_sha256: str = ""  # ARTIFACT_SHA256_TAG; "" for a version registered without it

    @classmethod
    def from_tags(cls, tags: Mapping[str, str], *, version: str, model_name: str,
                  aliases: tuple[str, ...], run_id: str, source: str,
                  created_at_ms: int) -> VersionInfo:
        """A version described by the tags the trainer wrote (and its identity)."""
        metrics, lineage, hyperparameters = parse_tags(tags)
        return cls(version=version, model_name=model_name, aliases=aliases, run_id=run_id,
                   source=source, metrics=metrics, lineage=lineage, created_at_ms=created_at_ms,
                   hyperparameters=hyperparameters,
                   artifact_sha256=tags.get(ARTIFACT_SHA256_TAG, ""))


def version_tags(metrics: Mapping[str, float], lineage: Lineage,
                 hyperparameters: Mapping[str, float]) -> dict[str, str]:
    """The tags that describe a version: held-out metrics, the lineage of its data and the
    hyper-parameters it was fitted with (the next search starts from a champion's)."""
    tags = {f"{METRIC_TAG}{k}": repr(float(v)) for k, v in metrics.items()}
    tags.update((f"{HYPERPARAMETER_TAG}{k}", repr(float(v))) for k, v in hyperparameters.items())
    for key, value in lineage.as_dict().items():
        tags[f"{LINEAGE_TAG}{key}"] = json.dumps(value) if isinstance(value, dict) else str(value)
    tags["recsys.artifact"] = f"{ARTIFACT_DIR}/{ARTIFACT_FILE}"
    return tags


def parse_tags(tags: Mapping[str, str]
               ) -> tuple[dict[str, float], Lineage | None, dict[str, float]]:
    """The metrics, lineage and hyper-parameters `version_tags` wrote; no lineage (or no
    hyper-parameters) for a version that lacks them."""
    metrics = _numbers(tags, METRIC_TAG)
    hyperparameters = _numbers(tags, HYPERPARAMETER_TAG)
    fields = {k.removeprefix(LINEAGE_TAG): v for k, v in tags.items()
              if k.startswith(LINEAGE_TAG)}
    try:
        fields["partition_offsets"] = json.loads(fields["partition_offsets"])
        lineage = Lineage.from_dict(fields)
    except (KeyError, ValueError, TypeError):  # a version registered by something else
        lineage = None
    return metrics, lineage, hyperparameters


def _numbers(tags: Mapping[str, str], prefix: str) -> dict[str, float]:
    return {k.removeprefix(prefix): float(v) for k, v in tags.items() if k.startswith(prefix)}
