"""Recommender settings: defaults, validation, and unknown variables rejected."""

from __future__ import annotations

import pytest

from services.core.settings import SettingsError, load
from services.recommender.settings import RecommenderSettings

PREFIX = "RECSYS_RECOMMENDER_"


def test_defaults() -> None:
    settings = load(RecommenderSettings, {}, prefix=PREFIX)
    assert (settings.max_k, settings.poll_interval_s, settings.cache_ttl_s) == (100, 2.0, 300)
    assert settings.history_size == 50
    assert settings.redis_url == "redis://127.0.0.1:6379/0"


def test_values_are_read_and_checked() -> None:
    settings = load(RecommenderSettings, {"RECSYS_RECOMMENDER_MAX_K": "20",
                                          "RECSYS_RECOMMENDER_HISTORY_CONSUMER": "false"},
                    prefix=PREFIX)
    assert (settings.max_k, settings.history_consumer) == (20, False)
    with pytest.raises(SettingsError, match="RECSYS_RECOMMENDER_MAX_K=0: must be >= 1"):
        load(RecommenderSettings, {"RECSYS_RECOMMENDER_MAX_K": "0"}, prefix=PREFIX)


def test_unknown_variables_are_rejected() -> None:
    with pytest.raises(SettingsError, match="unknown setting RECSYS_RECOMMENDER_MAXK"):
        load(RecommenderSettings, {"RECSYS_RECOMMENDER_MAXK": "5"}, prefix=PREFIX)


@pytest.mark.parametrize("value", ["0.0", "1.5", "nan"])
def test_the_index_target_recall_is_a_fraction(value: str) -> None:
    message = f"RECSYS_RECOMMENDER_INDEX_TARGET_RECALL={value}: must be > 0 and <= 1"
    with pytest.raises(SettingsError, match=message):
        load(RecommenderSettings, {"RECSYS_RECOMMENDER_INDEX_TARGET_RECALL": value},
             prefix=PREFIX)
    settings = load(RecommenderSettings, {"RECSYS_RECOMMENDER_INDEX_TARGET_RECALL": "1",
                                          "RECSYS_RECOMMENDER_INDEX_MIN_ITEMS": "0"},
                    prefix=PREFIX)
    assert (settings.index_target_recall, settings.index_min_items) == (1.0, 0)
