"""Follows the registered model's "champion" alias and hot-swaps the served version.

A poller thread looks the alias up every interval (services.model.champion reads MLflow); when
it names another version, the thread downloads that version's `.npz` into a private temporary
directory, loads it, builds its `Scorer` (with an item index, for a large catalogue), and only
then swaps it in with one reference assignment. A request reads `current` once and keeps that
object, so it never mixes two versions, and the old version is freed when the last request
holding it finishes. MLflow failures leave the current model serving; they are logged, counted
and retried at the next poll. A download that is not the file the trainer registered (its
SHA-256 tag) or not a valid model is refused: logged, counted by reason, the current model
keeps serving, and that version is not downloaded again unless the alias moves.
"""

from __future__ import annotations

import logging
import tempfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from services.model.artifact import ArtifactRefused, ModelArtifact
from services.model.lineage import Lineage
from services.model.versions import CHAMPION, VersionInfo
from services.recommender.metrics import RecommenderMetrics
from services.recommender.responses import ResponseWriter
from services.recommender.scoring import Scorer

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """One model version ready to serve; never modified after it is built."""

    model_name: str
    version: str
    alias: str
    run_id: str
    loaded_at: datetime
    metrics: Mapping[str, float]
    lineage: Lineage | None
    user_count: int
    item_count: int
    factors: int
    scorer: Scorer
    responses: ResponseWriter = field(init=False)  # built with the model, off the event loop

    def __post_init__(self) -> None:
        object.__setattr__(self, "responses", ResponseWriter(self.version,
                                                              self.scorer.item_ids))

    @property
    def cache_tag(self) -> str:
        """Names this model in cache keys: versions restart at 1 if a registered model is
        re-created, so the (unique) run id is part of it."""
        return f"{self.model_name}/{self.version}/{self.run_id}"


class ChampionSource(Protocol):
    """Where versions come from: services.model.champion's ChampionReader (MLflow), or a fake
    in unit tests."""

    def champion(self) -> VersionInfo | None: ...

    def load(self, version: VersionInfo, dst: Path) -> ModelArtifact:
        """The version's artifact, downloaded into the directory `dst`, checked against its
        registered SHA-256 and loaded; ArtifactRefused when it must not be served."""
        ...


class ModelStore:
    """The currently served model and the thread that keeps it up to date."""

    def __init__(self, source: ChampionSource, *, model_name: str, poll_interval_s: float,
                 metrics: RecommenderMetrics,
                 build_scorer: Callable[[ModelArtifact], Scorer] = Scorer,
                 on_swap: Callable[[LoadedModel], None] = lambda model: None) -> None:
        self._source = source
        self._model_name = model_name
        self._poll_interval_s = poll_interval_s
        self._metrics = metrics
        self._build_scorer = build_scorer
        self._on_swap = on_swap
        self._current: LoadedModel | None = None
        self._refused: VersionInfo | None = None  # the last version refused, not retried
        self._waiting_logged = False
        self._stopping = threading.Event()
        # A daemon: a lookup stuck on an unreachable MLflow must not hold up process exit.
        self._thread = threading.Thread(target=self._run, name="recommender-model-poller",
                                        daemon=True)

    @property
    def current(self) -> LoadedModel | None:
        return self._current

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self.poll_once()
            except Exception:  # the poller must outlive any failure
                self._metrics.model_load_failures.inc()
                log.warning("model poll failed; still serving version %s",
                            self._current.version if self._current else "none", exc_info=True)
            self._stopping.wait(self._poll_interval_s)

    def poll_once(self) -> bool:
        """Load and swap in the champion if it moved; True when a new version was swapped in."""
        info = self._source.champion()
        if info is None:
            if not self._waiting_logged:
                log.info("no champion yet", extra={"model": self._model_name, "alias": CHAMPION})
                self._waiting_logged = True
            return False
        if self._current is not None and self._current.version == info.version:
            return False
        if info == self._refused:
            return False
        try:
            with tempfile.TemporaryDirectory(prefix="recsys-model-") as tmp:
                artifact = self._source.load(info, Path(tmp))
        except ArtifactRefused as exc:
            self._refused = info
            self._metrics.models_refused.labels(exc.reason).inc()
            log.error("model version refused; still serving version %s",
                      self._current.version if self._current else "none", extra={
                          "model": self._model_name, "version": info.version,
                          "reason": exc.reason, "error": str(exc)})
            return False
        loaded = LoadedModel(
            model_name=self._model_name, version=info.version, alias=CHAMPION,
            run_id=info.run_id, loaded_at=datetime.now(UTC), metrics=dict(info.metrics),
            lineage=info.lineage, user_count=artifact.n_users, item_count=artifact.n_items,
            factors=artifact.factors, scorer=self._build_scorer(artifact),
        )
        previous, self._current = self._current, loaded  # the swap: one reference assignment
        self._metrics.model_swaps.inc()
        self._metrics.model.info({"name": loaded.model_name, "version": loaded.version,
                                  "run_id": loaded.run_id})
        scorer = loaded.scorer
        self._metrics.index_recall.set(scorer.recall)
        self._metrics.index_scanned.set(scorer.scanned)
        self._metrics.top_lists.set(scorer.top_lists is not None)
        log.info("serving model version", extra={
            "model": loaded.model_name, "version": loaded.version,
            "previous": previous.version if previous else None,
            "users": loaded.user_count, "items": loaded.item_count,
            "scoring": "index" if scorer.index else "exact",
            "top_lists": scorer.top_lists is not None,
            "index_recall": round(scorer.recall, 4), "index_scanned": round(scorer.scanned, 4),
            "index_probes": scorer.index.probes if scorer.index else None,
        })
        self._on_swap(loaded)
        return True
