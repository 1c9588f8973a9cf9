"""Stand-ins at the trainer's boundaries for its unit tests: an in-memory MLflow registry, and
a small learnable dataset."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from services.core.errors import Unavailable
from services.model.artifact import ModelArtifact
from services.model.lineage import Lineage
from services.model.versions import CHAMPION, VersionInfo
from services.trainer.dataset import StoredEvent
from services.trainer.model import Interactions


@dataclass
class FakeRegistry:
    """Records what a job logs; `fail` makes every call raise Unavailable; `hold` pauses the
    first logged epoch until released (so tests can act while a job runs)."""

    model_name: str = "model"
    fail: bool = False
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    versions: list[VersionInfo] = field(default_factory=list)
    champion_version: str | None = None
    hold: threading.Event | None = None
    in_epoch: threading.Event = field(default_factory=threading.Event)

    def _check(self) -> None:
        if self.fail:
            raise Unavailable("MLflow at http://127.0.0.1:1 failed to start a run: refused")

    def start_run(self, *, job_id: str, params: Mapping[str, Any], lineage: Lineage,
                  tags: Mapping[str, str]) -> str:
        self._check()
        run_id = f"run-{len(self.runs) + 1}"
        self.runs[run_id] = {"job_id": job_id, "params": dict(params), "lineage": lineage,
                             "tags": dict(tags), "metrics": [], "status": "RUNNING"}
        return run_id

    def log_metric(self, run_id: str, key: str, value: float, *, step: int) -> None:
        self._check()
        self.in_epoch.set()
        if self.hold is not None:
            self.hold.wait(10)
        self.runs[run_id]["metrics"].append((key, value, step))

    def log_values(self, run_id: str, *, params: Mapping[str, Any],
                   metrics: Mapping[str, float]) -> None:
        self._check()
        self.runs[run_id]["params"].update(params)
        self.runs[run_id]["metrics"].extend((key, value, 0) for key, value in metrics.items())

    def log_trial(self, parent_run_id: str, *, number: int, params: Mapping[str, Any],
                  metrics: Mapping[str, float], pruned: bool) -> None:
        self._check()
        self.runs[parent_run_id].setdefault("trials", []).append(
            {"number": number, "params": dict(params), "metrics": dict(metrics),
             "pruned": pruned})

    def register(self, run_id: str, *, metrics: Mapping[str, float], lineage: Lineage,
                 hyperparameters: Mapping[str, float], artifact: Path,
                 tags: Mapping[str, str]) -> VersionInfo:
        self._check()
        self.runs[run_id]["artifact"] = ModelArtifact.load(artifact)
        self.runs[run_id]["version_tags"] = dict(tags)
        info = VersionInfo(version=str(len(self.versions) + 1), model_name=self.model_name,
                           aliases=(), run_id=run_id, source=f"mlflow-artifacts:/{run_id}",
                           metrics=dict(metrics), lineage=lineage, created_at_ms=0,
                           hyperparameters=dict(hyperparameters))
        self.versions.append(info)
        return info

    def tag(self, run_id: str, version: str | None, tags: Mapping[str, str]) -> None:
        self.runs[run_id]["tags"].update(tags)

    def end_run(self, run_id: str, status: str) -> None:
        self._check()
        self.runs[run_id]["status"] = status

    def champion(self) -> VersionInfo | None:
        for info in self.versions:
            if info.version == self.champion_version:
                return VersionInfo(**{**info.__dict__, "aliases": (CHAMPION,)})
        return None

    def set_champion(self, version: str) -> None:
        self.champion_version = version


def clustered_events(n_users: int = 40, n_items: int = 30, per_user: int = 8,
                     seed: int = 0) -> list[StoredEvent]:
    """Users who like items of their own cluster: learnable, so NDCG is clearly above 0."""
    rng = np.random.default_rng(seed)
    events = []
    for u in range(n_users):
        cluster = u % 3
        pool = [i for i in range(n_items) if i % 3 == cluster]
        for i in rng.choice(pool, size=min(per_user, len(pool)), replace=False):
            n = len(events)
            events.append(StoredEvent(f"e{n:05d}", f"user{u}", f"item{i}", "view", None,
                                      1_700_000_000_000_000 + n, 0, n))
    return events


def planted(
    *, n_users: int = 300, n_items: int = 150, groups: int = 5, seed: int = 0
) -> Interactions:
    """Users of a group mostly pick their group's items, by a popularity skewed across groups.

    Global popularity alone then ranks other groups' items high; a factor model must not.
    """
    rng = np.random.default_rng(seed)
    item_group = np.arange(n_items) % groups
    popularity = rng.pareto(1.5, n_items) + 1
    users, items = [], []
    for user in range(n_users):
        own = np.flatnonzero(item_group == user % groups)
        p = popularity[own] / popularity[own].sum()
        picks = rng.choice(own, size=12, replace=False, p=p)
        noise = rng.choice(n_items, size=2, replace=False)
        users += [user] * 14
        items += [*picks, *noise]
    return Interactions.from_arrays(np.array(users), np.array(items), n_items=n_items)
