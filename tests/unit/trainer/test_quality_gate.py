"""The quality gate's decisions."""

from __future__ import annotations

import pytest

from services.model.versions import VersionInfo
from services.trainer.training import quality_gate


def champion(ndcg: float | None) -> VersionInfo:
    metrics = {} if ndcg is None else {"ndcg_at_10": ndcg}
    return VersionInfo(version="3", model_name="m", aliases=("champion",), run_id="r",
                       source="mlflow-artifacts:/1/r/artifacts/model", metrics=metrics,
                       lineage=None, created_at_ms=0)


@pytest.mark.parametrize(("score", "current", "promoted", "reason"), [
    (0.04, None, False, "below the floor"),
    (0.30, None, True, "first model"),
    (0.49, champion(0.495), True, "reaches champion v3's 0.4950 minus 0.01"),
    (0.48, champion(0.495), False, "is below champion v3's 0.4950 minus 0.01"),
    (0.04, champion(0.03), False, "below the floor"),
    (0.20, champion(None), True, "has no ndcg_at_10"),
])
def test_quality_gate(score: float, current: VersionInfo | None, promoted: bool,
                      reason: str) -> None:
    decision, why = quality_gate(score, current, floor=0.05, tolerance=0.01)
    assert decision is promoted
    assert reason in why
