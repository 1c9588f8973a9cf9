"""The catalogue core behind CatalogService: validate, complete what a change leaves out,
publish it to the catalogue topic, and answer reads from this server's view of that topic.

Every record is an item's or a user's whole state (a compacted topic keeps only the last
one of each), so a change that names part of it is completed from the view: an upsert without
`hidden` keeps the item's flag (a catalogue load that knows nothing of stock must not show
again what was hidden), hide and unhide publish the current item with the flag changed, and a
user's profile carries their last erasure. The view follows the topic within a poll, so such a
change first waits (briefly) until the view has read this server's own acknowledged changes: a
hide right after an upsert through the same server keeps what the upsert set. Of two changes to
one item racing through two replicas, the later record wins.

An erasure names the end of every partition of the interactions topic when it was accepted:
the user's events before it are erased wherever they are; later ones are new data.
"""

from __future__ import annotations

import asyncio
import base64
import heapq
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from google.protobuf.timestamp_pb2 import Timestamp

from recsys.events.v1.catalog_pb2 import CatalogChange, Item, User, UserErasure
from services.core.catalog import AUDIT_LOG, CatalogView, audit_id, record_key
from services.core.contract import id_problem
from services.core.errors import InvalidArgument, NotFound, Unavailable
from services.ingest.catalog_rules import item_problem, requested_by_problem, user_problem
from services.ingest.ingestor import Rejection, all_or_nothing_error
from services.ingest.metrics import ACCEPTED, FAILED, REJECTED, IngestMetrics
from services.ingest.publisher import Delivery
from services.ingest.validation import Problem

log = logging.getLogger(__name__)
audit = logging.getLogger(AUDIT_LOG)

DEFAULT_PAGE = 100
MAX_PAGE = 1000
# How often a change that is completed from the view looks whether it has read this server's
# own latest changes.
_VIEW_POLL_S = 0.01


class ChangePublisher(Protocol):
    """What the core needs of the catalogue topic's producer (services.ingest.publisher)."""

    @property
    def ready(self) -> bool: ...

    async def publish(self, keys: Sequence[bytes], values: Sequence[bytes]) -> Delivery: ...


@dataclass(frozen=True)
class BatchResult:
    accepted: int
    rejections: list[Rejection]


class Catalog:
    """Changes published with acks=all before they are answered; reads from `view`, once it
    has read the topic (`view_ready`)."""

    def __init__(self, *, publisher: ChangePublisher, view: CatalogView,
                 view_ready: Callable[[], bool], metrics: IngestMetrics, max_batch: int,
                 ack_timeout_s: float, interaction_ends: Callable[[], Mapping[int, int]],
                 clock: Callable[[], float] = time.time) -> None:
        self._publisher = publisher
        self._view = view
        self._view_ready = view_ready
        self._changes = metrics.catalog_changes
        self._max_batch = max_batch
        self._ack_timeout_s = ack_timeout_s
        self._interaction_ends = interaction_ends
        self._clock = clock
        # Per partition, the offset after this server's last acknowledged change.
        self._written: dict[int, int] = {}

    # -- items -------------------------------------------------------------------------------

    async def upsert_items(self, items: Sequence[Item], *, all_or_nothing: bool = False,
                           time_left: float | None = None) -> BatchResult:
        """Publish the valid items of one request; the others are returned as rejections."""
        self._check_size("items", len(items))
        rejections = _rejections(items, item_problem)
        if rejections and all_or_nothing:
            self._changes.labels("item", REJECTED).inc(len(items))
            raise all_or_nothing_error(rejections, "items", "items")
        self._changes.labels("item", REJECTED).inc(len(rejections))
        rejected = {r.index for r in rejections}
        await self._read_own_writes(time_left)
        now = self._now()
        changes = [CatalogChange(item=self._completed(item, now))
                   for n, item in enumerate(items) if n not in rejected]
        await self._publish("item", changes, time_left)
        return BatchResult(len(changes), rejections)

    def get_item(self, item_id: str) -> Item:
        self._check_id("item_id", item_id)
        self._check_view()
        item = self._view.items.get(item_id)
        if item is None:
            raise NotFound(f"item {item_id!r} is not in the catalogue")
        return item

    def list_items(self, *, page_size: int, page_token: str,
                   category: str) -> tuple[list[Item], str]:
        """A page of items in id order after `page_token`, and the next page's token ("" on
        the last page)."""
        if not 0 <= page_size <= MAX_PAGE:
            raise InvalidArgument("page_size", f"must be 0 to {MAX_PAGE} (0 means "
                                               f"{DEFAULT_PAGE}), got {page_size}")
        after = _token_id(page_token)
        self._check_view()
        size = page_size or DEFAULT_PAGE
        items = self._view.items
        ids = [item_id for item_id in list(items) if item_id > after]  # list(): one snapshot
        if category:
            ids = [i for i in ids if (item := items.get(i)) and category in item.categories]
        page = heapq.nsmallest(size + 1, ids)
        more = len(page) > size
        page = page[:size]
        found = [item for item_id in page if (item := items.get(item_id)) is not None]
        return found, _token(page[-1]) if more else ""

    async def set_hidden(self, item_id: str, hidden: bool, *,
                         time_left: float | None = None) -> Item:
        """Publish the item, as the view holds it (a bare one if it holds none), hidden or
        not; its new state."""
        self._check_id("item_id", item_id)
        await self._read_own_writes(time_left)
        item = Item()
        item.CopyFrom(self._view.items.get(item_id) or Item(item_id=item_id))
        item.hidden = hidden
        item.updated_at.CopyFrom(self._now())
        await self._publish("hide" if hidden else "unhide", [CatalogChange(item=item)],
                            time_left)
        return item

    async def delete_item(self, item_id: str, *, time_left: float | None = None) -> None:
        self._check_id("item_id", item_id)
        await self._publish("delete", [CatalogChange(deleted_item_id=item_id)], time_left)

    # -- users -------------------------------------------------------------------------------

    async def upsert_users(self, users: Sequence[User], *, all_or_nothing: bool = False,
                           time_left: float | None = None) -> BatchResult:
        """Publish the valid profiles of one request, each carrying the user's last erasure."""
        self._check_size("users", len(users))
        rejections = _rejections(users, user_problem)
        if rejections and all_or_nothing:
            self._changes.labels("user", REJECTED).inc(len(users))
            raise all_or_nothing_error(rejections, "users", "users")
        self._changes.labels("user", REJECTED).inc(len(rejections))
        rejected = {r.index for r in rejections}
        await self._read_own_writes(time_left)
        now = self._now()
        changes = []
        for n, given in enumerate(users):
            if n in rejected:
                continue
            user = User(user_id=given.user_id, labels=given.labels, updated_at=now)
            erased = self._view.erasures.get(user.user_id)
            if erased is not None:
                user.erasure.CopyFrom(erased.message)
            changes.append(CatalogChange(user=user))
        await self._publish("user", changes, time_left)
        return BatchResult(len(changes), rejections)

    async def erase_user(self, user_id: str, *, requested_by: str,
                         time_left: float | None = None) -> Timestamp:
        """Publish the user's erasure, covering every event acknowledged before now; when it
        was accepted."""
        self._check_id("user_id", user_id)
        problem = requested_by_problem(requested_by)
        if problem is not None:
            raise InvalidArgument("requested_by", problem)
        try:
            ends = await asyncio.to_thread(self._interaction_ends)
        except Exception as exc:  # the broker's client raises many kinds; all mean "not now"
            raise Unavailable(f"cannot read the end of the interactions topic "
                              f"({type(exc).__name__}): nothing was erased") from exc
        erasure = UserErasure(user_id=user_id, requested_by=requested_by,
                              requested_at=self._now(), interaction_offsets=ends)
        await self._publish("erasure", [CatalogChange(user_erasure=erasure)], time_left)
        audit.info("erasure accepted", extra={
            "user": audit_id(user_id), "requested_by": requested_by,
            "requested_at": erasure.requested_at.ToJsonString(),
            "interaction_offsets": dict(ends)})
        return erasure.requested_at

    # -- shared ------------------------------------------------------------------------------

    def _completed(self, given: Item, now: Timestamp) -> Item:
        """`given` with the current hidden flag when it has none, and a time when it has none."""
        item = Item()
        item.CopyFrom(given)
        if not item.HasField("hidden"):
            current = self._view.items.get(item.item_id)
            item.hidden = current is not None and current.hidden
        if not item.HasField("updated_at"):
            item.updated_at.CopyFrom(now)
        return item

    async def _publish(self, change: str, changes: Sequence[CatalogChange],
                       time_left: float | None) -> None:
        """Publish `changes` and wait for the broker's acknowledgement of all of them.

        Every record is a whole state, so publishing it again is harmless: a failure is
        always safe to retry."""
        if not changes:
            return
        counted = self._changes.labels(change, FAILED)
        if not self._publisher.ready:
            counted.inc(len(changes))
            raise Unavailable("the Kafka broker is unreachable: nothing was published")
        delivery = await self._publisher.publish(
            [record_key(c) for c in changes],
            [c.SerializeToString(deterministic=True) for c in changes])
        wait_s = self._ack_timeout_s
        if time_left is not None:
            wait_s = max(0.0, min(wait_s, time_left - min(0.25, time_left / 10)))
        await asyncio.wait((delivery.done,), timeout=wait_s)
        missing = len(delivery.unacknowledged())
        if missing:
            counted.inc(missing)
            cause = delivery.error or "no acknowledgement in time"
            raise Unavailable(f"the broker did not acknowledge {missing} of {len(changes)} "
                              f"changes ({cause}); publishing them again is safe")
        self._changes.labels(change, ACCEPTED).inc(len(changes))
        for future in delivery.futures:
            written = future.value
            self._written[written.partition] = max(self._written.get(written.partition, 0),
                                                   written.offset + 1)

    async def _read_own_writes(self, time_left: float | None) -> None:
        """Once the view has read the topic, wait until it holds this server's acknowledged
        changes (a change completed from the view must start from them)."""
        self._check_view()
        wait_s = self._ack_timeout_s if time_left is None else min(self._ack_timeout_s,
                                                                    time_left / 2)
        for _ in range(max(1, int(wait_s / _VIEW_POLL_S))):
            positions = self._view.positions
            if all(positions.get(p, 0) >= end for p, end in self._written.items()):
                return
            await asyncio.sleep(_VIEW_POLL_S)
        raise Unavailable("this server's view of the catalogue has not read its own latest "
                          "changes yet; retry")

    def _check_size(self, field: str, count: int) -> None:
        if not 1 <= count <= self._max_batch:
            raise InvalidArgument(field, f"must hold 1 to {self._max_batch} entries, got {count}")

    @staticmethod
    def _check_id(field: str, value: str) -> None:
        problem = id_problem(value)
        if problem is not None:
            raise InvalidArgument(field, problem)

    def _check_view(self) -> None:
        if not self._view_ready():
            raise Unavailable("this server is still reading the catalogue topic")

    def _now(self) -> Timestamp:
        stamp = Timestamp()
        stamp.FromNanoseconds(int(self._clock() * 1e9))
        return stamp


def _rejections(entries: Sequence[Item] | Sequence[User],
                problem: Callable[..., Problem | None]) -> list[Rejection]:
    return [Rejection(n, *found) for n, entry in enumerate(entries)
            if (found := problem(entry)) is not None]


def _token(item_id: str) -> str:
    return base64.urlsafe_b64encode(item_id.encode()).decode()


def _token_id(token: str) -> str:
    """The item id a page token stands for ("" for the first page)."""
    try:
        return base64.b64decode(token.encode(), altchars=b"-_", validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        raise InvalidArgument("page_token", "is not a token this service gave") from None
