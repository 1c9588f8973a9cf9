"""The in-memory index of stored event ids' keys."""

from __future__ import annotations

import numpy as np

from services.trainer.event_keys import EventKeyIndex, event_key, event_keys


def test_a_key_is_a_stable_signed_64_bit_hash_of_the_id() -> None:
    assert event_key("e1") == event_key("e1") != event_key("e2")
    assert -(2**63) <= event_key("e1") < 2**63
    assert event_keys(["e1", "e2"]).tolist() == [event_key("e1"), event_key("e2")]
    assert event_key("9a1c") == 7414527747938782911  # pinned: stored keys outlive processes


def test_every_added_row_is_found_after_runs_merge() -> None:
    index = EventKeyIndex()
    rng = np.random.default_rng(7)
    keys = rng.integers(-(2**63), 2**63 - 1, size=5_000, dtype=np.int64)
    for start in range(0, len(keys), 100):  # 50 appends: runs merge many times
        index.add(keys[start:start + 100], np.arange(start, start + 100))
    assert len(index) == len(keys)
    assert index.candidates(keys) == {n: [n] for n in range(len(keys))}
    assert index.candidates(np.array([1, 2, 3], np.int64)) == {}


def test_rows_sharing_a_key_are_all_candidates_oldest_first() -> None:
    index = EventKeyIndex()
    index.add(np.array([5, 9], np.int64), np.array([1, 2]))
    index.add(np.array([9], np.int64), np.array([3]))
    index.add(np.array([9, 4], np.int64), np.array([4, 5]))
    assert index.candidates(np.array([4, 9, 7], np.int64)) == {0: [5], 1: [2, 3, 4]}
