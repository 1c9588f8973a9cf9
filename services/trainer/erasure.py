"""Erasure in the trainer's durable dataset: a user's events that their erasure covers are
deleted, so the next model version is trained on nothing of them.

A follower (services.core.consumer, without a group) reads the catalogue topic from its start
into a view; each erasure record names, per partition of the interactions topic, the end offset
when ingest accepted it. Its rows are deleted once the dataset has consumed up to those offsets
(until then the batch is retried after a backoff: events the erasure covers that the dataset
has not stored yet would otherwise arrive after the delete); the user's later events are new
data and stay. Deleting only covered rows makes a re-read of the topic (every start) a no-op
for erasures already done. An audit line (logger `recsys.audit`) records each erasure that
deleted rows: who asked, when, how many rows, the user only as the SHA-256 of the id.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping

from recsys.events.v1.catalog_pb2 import CatalogChange
from services.core.catalog import AUDIT_LOG, CatalogView, Erasure, audit_id
from services.core.consumer import Backoff, Batch, ConsumerLoop, Subscription
from services.trainer.dataset import DatasetStore
from services.trainer.metrics import TrainerMetrics
from services.trainer.settings import TrainerSettings

audit = logging.getLogger(AUDIT_LOG)


class ErasurePending(Exception):
    """The dataset has not consumed every event an erasure covers yet (retried)."""


class DatasetEraser:
    """The catalogue follower's handler: applies erasures to the dataset store."""

    def __init__(self, store: DatasetStore, *, topic: str, metrics: TrainerMetrics) -> None:
        self.view = CatalogView()
        self._store = store
        self._topic = topic
        self.metrics = metrics
        self._pending: dict[str, Erasure] = {}
        self._lock = threading.Lock()
        self._applied: dict[int, int] = {}

    def applied_through(self) -> Mapping[int, int]:
        """Per partition of the catalogue topic, the offset before which every erasure has
        been applied to the dataset (a job reads it before its snapshot: its lineage)."""
        with self._lock:
            return dict(self._applied)

    def __call__(self, batch: Batch[CatalogChange]) -> None:
        try:
            self._apply(batch)
        finally:
            with self._lock:
                self._applied = dict(self.view.positions)
                for erasure in self._pending.values():  # not before the first one pending
                    self._applied[erasure.partition] = min(
                        self._applied[erasure.partition], erasure.offset)

    def _apply(self, batch: Batch[CatalogChange]) -> None:
        changes = self.view.apply(batch.records)
        records = {(r.partition, r.offset) for r in batch.records}
        for user in changes.users:
            erasure = self.view.erasures.get(user)
            if erasure is not None and (erasure.partition, erasure.offset) in records:
                self._pending[user] = erasure
        consumed = self._store.offsets(self._topic)
        for user, erasure in list(self._pending.items()):
            ends = erasure.interaction_offsets
            if any(consumed.get(p, 0) < end for p, end in ends.items()):
                continue
            rows = self._store.delete_user_events(user, before=ends)
            del self._pending[user]
            self.metrics.erasures.inc()
            self.metrics.dataset_rows.set(self._store.row_count)
            if rows:
                message = erasure.message
                audit.info("erasure applied to the dataset", extra={
                    "user": audit_id(user), "requested_by": message.requested_by,
                    "requested_at": message.requested_at.ToJsonString(), "rows": rows})
        if self._pending:
            raise ErasurePending(f"{len(self._pending)} erasure(s) wait for the dataset to "
                                 "consume the events they cover")


def catalog_follower(eraser: DatasetEraser,
                     settings: TrainerSettings) -> ConsumerLoop[CatalogChange]:
    """The follower of the catalogue topic that hands `eraser` its batches (not started)."""
    metrics = eraser.metrics
    return ConsumerLoop(
        Subscription(bootstrap=settings.kafka_bootstrap, topic=settings.catalog_topic,
                     group_id=None, name="trainer-catalog", security=settings.kafka_security()),
        eraser, message=CatalogChange, on_error=lambda _: metrics.catalog_errors.inc(),
        backoff=Backoff(longest_s=5.0))
