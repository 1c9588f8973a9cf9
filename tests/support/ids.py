"""Ids that follow the contract's id rule (services/core/contract.py), and ids that break it
with what `id_problem` says about each: shared by the rule's own test and by the ingest
validator's test that checks its inline copy of the rule agrees."""

from __future__ import annotations

from services.core.contract import ID_RULE, MAX_ID_CHARS

VALID_IDS = ["u1", "u" * MAX_ID_CHARS, "ü" * MAX_ID_CHARS, "a b", "user@example.com", "日本"]
INVALID_IDS = [
    ("", "is required"),
    ("u" * (MAX_ID_CHARS + 1), f"at most {MAX_ID_CHARS} characters, got {MAX_ID_CHARS + 1}"),
    ("tab\there", ID_RULE),
    ("new\nline", ID_RULE),
    ("nul\x00", ID_RULE),
    ("no\u00a0break", ID_RULE),  # a separator other than the space
    ("\u200bzero-width", ID_RULE),  # a format character
]
