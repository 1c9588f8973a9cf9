"""The valid range of each hyper-parameter, defined once.

`TrainConfig.validate`, the trainer's settings and a training request's overrides all check
against `BOUNDS`; the comments of trainer.proto's `Hyperparameters` state the same rules. A
hyper-parameter search draws from sub-ranges that lie inside these (`Bound.contains` of each
end), so it can never propose a value the trainer would refuse.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Bound:
    """``low <= value <= high``, or ``low < value`` when `low_open`; NaN and ±inf never pass."""

    low: float
    high: float = math.inf
    low_open: bool = False

    def contains(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        above = value > self.low if self.low_open else value >= self.low
        return above and value <= self.high

    @property
    def rule(self) -> str:
        """The rule in words, as error messages and documentation give it: "1 to 1024", "> 0"."""
        if math.isfinite(self.high):
            low = f"> {self.low:g} and <=" if self.low_open else f"{self.low:g} to"
            return f"{low} {self.high:g}"
        return f"{'>' if self.low_open else '>='} {self.low:g}"


# In TrainConfig's field order: the first field outside its bound is the one reported.
BOUNDS: dict[str, Bound] = {
    "factors": Bound(1, 1024),
    "epochs": Bound(1, 200),
    "regularization": Bound(0, low_open=True),
    "reg_exponent": Bound(0),
    "alpha": Bound(0, low_open=True),
    "init_std": Bound(0, low_open=True),
    "seed": Bound(0),
}


@dataclass(frozen=True)
class SearchRange:
    """Where the hyper-parameter search draws a value: uniform, or log-uniform with `log`."""

    low: float
    high: float
    log: bool = False
    integer: bool = False


# The hyper-parameter search's sub-ranges (services/trainer/search.py), inside BOUNDS, chosen
# from the sensitivity measured across data shapes (README, "Hyper-parameter search").
# "regularization" is drawn as the penalty of a typical user's row (see `search.penalty`),
# which stays put when alpha or the exponent move; the regularisation itself follows.
SEARCH_SPACE: dict[str, SearchRange] = {
    "factors": SearchRange(16, 128, log=True, integer=True),
    "epochs": SearchRange(4, 16, integer=True),
    "alpha": SearchRange(0.5, 50.0, log=True),
    "reg_exponent": SearchRange(0.5, 1.0),
    "regularization": SearchRange(3.0, 1000.0, log=True),
}


class OutOfBounds(ValueError):
    """A hyper-parameter outside its bound; `name` is the field, `reason` says why."""

    def __init__(self, name: str, value: float) -> None:
        self.name = name
        self.reason = f"must be {BOUNDS[name].rule}, got {value}"
        super().__init__(f"{name}: {self.reason}")


def check(name: str, value: float) -> None:
    """Raise OutOfBounds unless `value` is inside the bound of hyper-parameter `name`."""
    if not BOUNDS[name].contains(value):
        raise OutOfBounds(name, value)
