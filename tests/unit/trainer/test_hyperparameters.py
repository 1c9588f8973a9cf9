"""One table of hyper-parameter bounds: the model, the settings, a request and trainer.proto's
comments all say the same."""

from __future__ import annotations

import dataclasses
import math
import re

import pytest

from services.core.errors import InvalidArgument
from services.core.settings import SettingsError, load
from services.trainer.hyperparameters import BOUNDS, Bound, OutOfBounds
from services.trainer.jobs import OVERRIDES, resolve_config
from services.trainer.model import TrainConfig
from services.trainer.settings import TrainerSettings
from tests.support.paths import REPO

PROTO = REPO / "protos/recsys/trainer/v1/trainer.proto"


@pytest.mark.parametrize(("bound", "inside", "outside", "rule"), [
    (Bound(1, 1024), [1, 512, 1024], [0, 1025, math.nan], "1 to 1024"),
    (Bound(0, low_open=True), [1e-12, 1e12], [0, -1, math.inf, math.nan], "> 0"),
    (Bound(0), [0, 3.5], [-1e-12, math.inf], ">= 0"),
    (Bound(0, 1, low_open=True), [1e-12, 1], [0, 1.5], "> 0 and <= 1"),
])
def test_a_bound_holds_its_values_and_says_its_rule(
    bound: Bound, inside: list[float], outside: list[float], rule: str
) -> None:
    assert all(bound.contains(value) for value in inside)
    assert not any(bound.contains(value) for value in outside)
    assert bound.rule == rule


def test_every_bound_is_a_train_config_field_and_the_defaults_are_inside() -> None:
    assert BOUNDS.keys() <= {field.name for field in dataclasses.fields(TrainConfig)}
    assert BOUNDS.keys() >= OVERRIDES
    TrainConfig().validate()


# Values the model, the settings and requests once disagreed on (alpha 0, factors 1025), and
# one out-of-bound value for each of the other hyper-parameters a request may override.
@pytest.mark.parametrize(("name", "value"), [
    ("alpha", 0.0), ("factors", 1025), ("epochs", 0), ("regularization", 0.0), ("seed", -1),
])
def test_the_model_the_settings_and_a_request_refuse_the_same_values(
    name: str, value: float
) -> None:
    reason = f"must be {BOUNDS[name].rule}, got {value}"
    with pytest.raises(OutOfBounds, match=f"^{name}: {re.escape(reason)}$"):
        dataclasses.replace(TrainConfig(), **{name: value}).validate()
    variable = f"RECSYS_TRAINER_{name.upper()}"
    with pytest.raises(SettingsError, match=f"^{variable}=.*: must be {BOUNDS[name].rule}$"):
        load(TrainerSettings, {variable: str(value)}, prefix="RECSYS_TRAINER_")
    with pytest.raises(InvalidArgument) as caught:
        resolve_config(TrainConfig(), {name: value})
    assert (caught.value.field, caught.value.reason) == (f"hyperparameters.{name}", reason)


def _proto_comments() -> dict[str, str]:
    """Each Hyperparameters field of trainer.proto and the comment line above it."""
    text = PROTO.read_text()
    message = text[text.index("message Hyperparameters {"):]
    message = message[:message.index("\n}")]
    return dict((name, comment) for comment, name in
                re.findall(r"// (.*)\n\s*optional \w+ (\w+) = \d+;", message))


def test_trainer_proto_states_each_bound_a_request_may_override() -> None:
    comments = _proto_comments()
    assert comments.keys() == OVERRIDES
    for name, comment in comments.items():
        assert comment.endswith(f", {BOUNDS[name].rule}."), (name, comment)
