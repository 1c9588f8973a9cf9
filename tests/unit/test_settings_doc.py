"""README's settings tables are generated; they must match the settings classes."""

from __future__ import annotations

from scripts import settings_doc


def test_the_readme_lists_every_setting() -> None:
    assert settings_doc.main(["--check"]) == 0, "run scripts/settings_doc.py --write"


def test_every_setting_has_a_row() -> None:
    rendered = settings_doc.render()
    for name in ("RECSYS_GRPC_PORT", "RECSYS_INGEST_MAX_BATCH", "RECSYS_TRAINER_DATA_DIR",
                 "RECSYS_REDIS_URL", "RECSYS_RECOMMENDER_MAX_K"):
        assert f"| `{name}` |" in rendered
