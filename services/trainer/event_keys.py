"""Which event ids the dataset store holds, kept in memory so an append writes nowhere but
the end of the events table.

An event's key is a 64-bit hash of its id (`event_key`). The index maps keys to the rows that
carry them, as sorted runs of (key, rowid) merged as they grow, like an LSM tree's levels:
an append adds one run, a lookup is a binary search per run (about log2(rows / batch) runs),
and each key is copied O(log n) times over the store's life. A key found here only names
candidate rows; the store compares their event ids, so a hash collision never drops an event.
Memory: 16 bytes per stored event (and, while the largest runs merge, that again for a moment).
"""

from __future__ import annotations

from collections.abc import Iterable
from hashlib import blake2b

import numpy as np


def event_key(event_id: str) -> int:
    """The id's key: the first 8 bytes of its BLAKE2b digest as a signed integer (SQLite's
    INTEGER), the same in every process and version."""
    digest = blake2b(event_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


def event_keys(event_ids: Iterable[str]) -> np.ndarray:
    """`event_key` of each id, as int64 (one call per id, the bytes read at once)."""
    return np.frombuffer(b"".join(blake2b(e.encode(), digest_size=8).digest()
                                  for e in event_ids), "<i8").astype(np.int64)


class EventKeyIndex:
    """Stored events' keys and rowids; the caller keeps it in step with the table."""

    def __init__(self) -> None:
        self._runs: list[tuple[np.ndarray, np.ndarray]] = []  # (keys, rowids), sorted by key

    def __len__(self) -> int:
        return sum(len(keys) for keys, _ in self._runs)

    def add(self, keys: np.ndarray, rowids: np.ndarray) -> None:
        """Index rows: a new run, merged into the last one while that is at most twice its
        size, so runs shrink geometrically from the first."""
        if not len(keys):
            return
        order = np.argsort(keys, kind="stable")
        run = (keys[order], rowids[order])
        while self._runs and len(self._runs[-1][0]) <= 2 * len(run[0]):
            run = _merge(self._runs.pop(), run)
        self._runs.append(run)

    def candidates(self, keys: np.ndarray) -> dict[int, list[int]]:
        """For each position in `keys` whose key is indexed, the rowids carrying that key."""
        found: dict[int, list[int]] = {}
        for run_keys, run_rowids in self._runs:
            first = np.searchsorted(run_keys, keys, side="left")
            last = np.searchsorted(run_keys, keys, side="right")
            for at in np.flatnonzero(last > first).tolist():
                found.setdefault(at, []).extend(run_rowids[first[at]:last[at]].tolist())
        return found


def _merge(older: tuple[np.ndarray, np.ndarray], newer: tuple[np.ndarray, np.ndarray]
           ) -> tuple[np.ndarray, np.ndarray]:
    """Two sorted runs as one, in linear time (equal keys: the older run's rows first)."""
    at = np.searchsorted(older[0], newer[0], side="right")
    return np.insert(older[0], at, newer[0]), np.insert(older[1], at, newer[1])
