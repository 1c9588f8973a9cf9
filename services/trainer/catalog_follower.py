"""The trainer's follower of the catalogue topic: keeps the catalogue in the dataset store and
erases users from it, so the next model version is trained on nothing of them.

A follower (services.core.consumer, without a group) reads the topic from its start into a
view. The store keeps each item's and user's row (services.trainer.dataset_catalog) with the
topic's offsets, in one transaction, so a restarted trainer neither loses a change nor applies
one twice: records before the stored offsets are skipped, the last record of an id wins.

Each erasure record names, per partition of the interactions topic, the end offset when ingest
accepted it. The user's events are deleted once the dataset has consumed up to those offsets
(until then the batch is retried after a backoff: events the erasure covers that the dataset
has not stored yet would otherwise arrive after the delete); the user's later events are new
data and stay. The stored catalogue offsets never pass an erasure not yet applied, so a
snapshot's lineage (which records them) tells which erasures it postdates. Deleting only
covered rows makes a re-read of the topic (every start) a no-op for erasures already done. An
audit line (logger `recsys.audit`) records each erasure that deleted rows: who asked, when, how
many rows, the user only as the SHA-256 of the id.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

from google.protobuf.message import Message

from recsys.events.v1.catalog_pb2 import CatalogChange, Item, User
from services.core.catalog import AUDIT_LOG, CatalogView, Erasure, audit_id
from services.core.consumer import Backoff, Batch, ConsumerLoop, Record, Subscription
from services.trainer.dataset import DatasetStore
from services.trainer.dataset_catalog import CatalogItem, CatalogUser, CatalogWrites
from services.trainer.metrics import TrainerMetrics
from services.trainer.settings import TrainerSettings

audit = logging.getLogger(AUDIT_LOG)


class ErasurePending(Exception):
    """The dataset has not consumed every event an erasure covers yet (retried)."""


class CatalogFollower:
    """The handler of the catalogue topic's batches: stores the catalogue, applies erasures."""

    def __init__(self, store: DatasetStore, *, topic: str, catalog_topic: str,
                 metrics: TrainerMetrics) -> None:
        self.view = CatalogView()
        self._store = store
        self._topic = topic
        self._catalog_topic = catalog_topic
        self.metrics = metrics
        self._pending: dict[str, Erasure] = {}

    def __call__(self, batch: Batch[CatalogChange]) -> None:
        changes = self.view.apply(batch.records)
        records = {(r.partition, r.offset) for r in batch.records}
        for user in changes.users:
            erasure = self.view.erasures.get(user)
            if erasure is not None and (erasure.partition, erasure.offset) in records:
                self._pending[user] = erasure
        self._erase()
        self._keep(batch.records)
        if self._pending:
            raise ErasurePending(f"{len(self._pending)} erasure(s) wait for the dataset to "
                                 "consume the events they cover")

    def _erase(self) -> None:
        """Delete the events of each pending erasure that the dataset has fully consumed."""
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

    def _keep(self, records: Sequence[Record[CatalogChange]]) -> None:
        """Store what `records` change, from the stored offsets up to the first erasure still
        pending in each partition (the retried batch stores the rest)."""
        stop: dict[int, float] = {}
        for erasure in self._pending.values():
            stop[erasure.partition] = min(stop.get(erasure.partition, math.inf), erasure.offset)
        stored = self._store.offsets(self._catalog_topic)
        writes = CatalogWrites()
        next_offsets: dict[int, int] = {}
        for partition, offset, change in records:
            if stored.get(partition, 0) <= offset < stop.get(partition, math.inf):
                if change is not None:
                    _fold(writes, change)
                next_offsets[partition] = offset + 1
        if next_offsets:
            self._store.apply_catalog(writes, topic=self._catalog_topic,
                                      next_offsets=next_offsets)


def _fold(writes: CatalogWrites, change: CatalogChange) -> None:
    """Fold one change into `writes` (as `CatalogView.apply` folds it into a view)."""
    kind = change.WhichOneof("change")
    if kind == "item":
        writes.items[change.item.item_id] = _item_row(change.item)
    elif kind == "deleted_item_id":
        writes.items[change.deleted_item_id] = None
    elif kind == "user":
        writes.users[change.user.user_id] = _user_row(change.user)
    elif kind == "user_erasure":
        writes.users[change.user_erasure.user_id] = None


def _item_row(item: Item) -> CatalogItem:
    return CatalogItem(item.item_id, tuple(item.categories), tuple(item.labels), item.hidden,
                       _microseconds(item, "available_from"),
                       _microseconds(item, "available_until"), _microseconds(item, "updated_at"))


def _user_row(user: User) -> CatalogUser:
    return CatalogUser(user.user_id, tuple(user.labels))


def _microseconds(message: Message, name: str) -> int | None:
    """The Timestamp field `name` in microseconds since the epoch; None when absent."""
    return int(getattr(message, name).ToMicroseconds()) if message.HasField(name) else None


def catalog_loop(follower: CatalogFollower,
                 settings: TrainerSettings) -> ConsumerLoop[CatalogChange]:
    """The loop that hands `follower` the catalogue topic's batches (not started)."""
    metrics = follower.metrics
    return ConsumerLoop(
        Subscription(bootstrap=settings.kafka_bootstrap, topic=settings.catalog_topic,
                     group_id=None, name="trainer-catalog", security=settings.kafka_security()),
        follower, message=CatalogChange, on_error=lambda _: metrics.catalog_errors.inc(),
        backoff=Backoff(longest_s=5.0))
