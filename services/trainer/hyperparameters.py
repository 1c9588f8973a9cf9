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
