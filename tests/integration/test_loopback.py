"""The run is in a network namespace of its own with only the loopback interface
(tests/support/loopback.py): whatever a test starts can reach nothing else, and an attempt to is
refused and counted, so the session fails if anything tried."""

from __future__ import annotations

import errno

import pytest

from tests.support import loopback

pytestmark = pytest.mark.integration


def test_the_run_has_a_network_namespace_with_only_loopback() -> None:
    assert loopback.isolated()
    assert loopback.interfaces() == ["lo"]


def test_an_attempt_to_leave_loopback_fails_at_once_and_is_counted() -> None:
    before = loopback.attempts_beyond_loopback()
    error = loopback.try_to_leave()
    assert error.errno == errno.ENETUNREACH
    assert loopback.attempts_beyond_loopback() == before + 1
