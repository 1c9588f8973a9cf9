from __future__ import annotations

import pytest

from services.core.settings import SettingsError, load
from services.trainer.model import TrainConfig
from services.trainer.settings import DEFAULT_TYPE_WEIGHTS, TrainerSettings

PREFIX = "RECSYS_TRAINER_"
ALL_TYPES = "view=1,click=2,add_to_cart=3,purchase=5,rating=1,like=3,share=3"


def test_defaults() -> None:
    settings = load(TrainerSettings, {}, prefix=PREFIX)
    assert settings.type_weights == DEFAULT_TYPE_WEIGHTS
    assert settings.consumer_group == "trainer"
    assert (settings.min_ndcg, settings.gate_tolerance) == (0.05, 0.01)
    assert settings.train_config() == TrainConfig()
    assert str(settings.store_path).endswith("trainer.sqlite3")


def test_overrides_are_typed() -> None:
    settings = load(TrainerSettings, {
        "RECSYS_TRAINER_TYPE_WEIGHTS": ALL_TYPES.replace("purchase=5", "purchase=8.5"),
        "RECSYS_TRAINER_FACTORS": "32",
        "RECSYS_TRAINER_THREADS": "2",
        "RECSYS_TRAINER_TRIGGER_NEW_EVENTS": "1000",
    }, prefix=PREFIX)
    assert settings.type_weights["purchase"] == 8.5
    assert settings.train_config().factors == 32
    assert settings.train_config().num_threads == 2
    assert settings.trigger_new_events == 1000


@pytest.mark.parametrize(("name", "value"), [
    ("RECSYS_TRAINER_TYPE_WEIGHTS", "view=1,click=2"),  # a type is missing
    ("RECSYS_TRAINER_TYPE_WEIGHTS", ALL_TYPES + ",poke=1"),  # unknown type
    ("RECSYS_TRAINER_TYPE_WEIGHTS", ALL_TYPES.replace("view=1", "view=-1")),
    ("RECSYS_TRAINER_TYPE_WEIGHTS", "view"),
    ("RECSYS_TRAINER_FACTORS", "0"),
    ("RECSYS_TRAINER_EPOCHS", "500"),
    ("RECSYS_TRAINER_MIN_NDCG", "1.5"),
    ("RECSYS_TRAINER_CONSUMER_BATCH", "0"),
    ("RECSYS_TRAINER_TPYO", "1"),
])
def test_bad_settings_stop_the_start(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        load(TrainerSettings, {name: value}, prefix=PREFIX)
