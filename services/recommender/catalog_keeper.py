"""The recommender's catalogue: the view folded from the catalogue topic, and the
`CatalogState` of the model version being served.

Two threads write, requests read. The catalogue follower (a `ConsumerLoop` without a group,
reading the topic from its start) folds each batch into the view and, when it changed
something, publishes a new state for the current model; a request asks for the state of the
model it holds, which is built (once, under the same lock) when the model was swapped since, or
advanced when an availability window opened or closed. A published state never changes, so
the common case is one attribute read and two comparisons, without the lock.

How fast a hide reaches answers: the follower's poll (`POLL_TIMEOUT_MS`) plus the batch's
fold; the state's `version` is part of every cache key, so no answer cached before the hide is
served after it.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from recsys.events.v1.catalog_pb2 import CatalogChange
from services.core.catalog import CatalogView
from services.core.consumer import Batch
from services.recommender.catalog_state import CatalogState, StateBuilder
from services.recommender.model_store import LoadedModel

#: The follower's poll timeout: records arriving on an idle topic are fetched this soon.
POLL_TIMEOUT_MS = 100


class CatalogKeeper:
    """The view of the catalogue topic and the served model's state of it."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self.view = CatalogView()
        self._clock = clock
        self._lock = threading.Lock()
        self._builder: StateBuilder | None = None
        self._state: CatalogState | None = None
        self._next_change_s = math.inf

    @property
    def published(self) -> CatalogState | None:
        """The last state published (for metrics), if any."""
        return self._state

    def apply(self, batch: Batch[CatalogChange]) -> list[str]:
        """The follower's handler: fold `batch` in, republish if it changed anything; the
        users whose erasure record is in the batch."""
        with self._lock:
            changes = self.view.apply(batch.records)
            if changes and self._builder is not None:
                self._builder.update(changes, self.view.version)
                self._publish()
        records = {(r.partition, r.offset) for r in batch.records}
        return [user for user in changes.users
                if (erasure := self.view.erasures.get(user)) is not None
                and (erasure.partition, erasure.offset) in records]

    def erased(self, user_id: str, partition: int, offset: int) -> bool:
        """Whether the interactions topic's record at (`partition`, `offset`) of `user_id`
        was acknowledged before the user's erasure."""
        erasure = self.view.erasures.get(user_id)
        return erasure is not None and erasure.covers(partition, offset)

    def state(self, model: LoadedModel) -> CatalogState:
        """The catalogue's state for `model`, as of the last batch folded and now."""
        state = self._state
        if (state is not None and state.scorer is model.scorer
                and self._clock() < self._next_change_s):
            return state
        with self._lock:
            now_s = self._clock()
            if self._builder is None or self._builder.model is not model:
                self._builder = StateBuilder(model, self.view, view_version=self.view.version,
                                             now_s=now_s)
                self._publish()
            elif now_s >= self._next_change_s:
                self._builder.advance(now_s)
                self._publish()
            assert self._state is not None  # published above, or by an earlier call
            return self._state

    def _publish(self) -> None:
        assert self._builder is not None
        self._state = self._builder.publish()
        upcoming = self._builder.next_change_s()
        self._next_change_s = math.inf if upcoming is None else upcoming
