"""A job's first step: wait until the dataset holds every event acknowledged before it started.

Ingest answers a client only once the broker has the event, but the trainer's consumer appends
it to the dataset a moment later; a job that snapshotted at once would miss what was just
acknowledged (a main job that sends 100,000 events and trains at once trained on 95,777). So a
job reads each partition's end offset when it starts and waits, bounded, until the dataset's
stored offsets reach them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from services.core.errors import Unavailable
from services.trainer.dataset import DatasetStore
from services.trainer.model import TrainingCancelled

_POLL_S = 0.2


def events_behind(stored: Mapping[int, int], ends: Mapping[int, int]) -> int:
    """Events below the end offsets that the dataset has not stored yet."""
    return sum(max(end - stored.get(partition, 0), 0) for partition, end in ends.items())


def wait_for_events(store: DatasetStore, topic: str, ends: Mapping[int, int], *,
                    timeout_s: float, report: Callable[[int], None],
                    cancelled: Callable[[], bool]) -> None:
    """Return once the dataset's offsets of `topic` reach `ends`; `report(behind)` after each
    change. Unavailable after `timeout_s`; TrainingCancelled when `cancelled()`."""
    deadline = time.monotonic() + timeout_s
    reported = None
    while (behind := events_behind(store.offsets(topic), ends)) > 0:
        if behind != reported:
            report(behind)
            reported = behind
        if cancelled():
            raise TrainingCancelled("cancelled while waiting for events")
        if time.monotonic() > deadline:
            raise Unavailable(
                f"the dataset is still {behind} events behind the {sum(ends.values())} that "
                f"{topic} held when the job started, after {timeout_s:g} s: is the trainer's "
                "consumer reading? (a job can skip this wait and train on what it holds)")
        time.sleep(_POLL_S)
    if reported:
        report(0)
