"""The version tags the recommender reads, and the quality gate's decisions."""

from __future__ import annotations

import pytest

from services.trainer.dataset import Lineage
from services.trainer.registry import VersionInfo, _parse_tags, version_tags
from services.trainer.training import quality_gate

LINEAGE = Lineage(topic="interactions", row_count=100, content_hash="c0ffee",
                  partition_offsets={0: 40, 1: 60}, user_count=10, item_count=20)
METRICS = {"ndcg_at_10": 0.5, "precision_at_10": 0.4, "users_evaluated": 10.0}


def champion(ndcg: float | None) -> VersionInfo:
    metrics = {} if ndcg is None else {"ndcg_at_10": ndcg}
    return VersionInfo(version="3", model_name="m", aliases=("champion",), run_id="r",
                       metrics=metrics, lineage=None, created_at_ms=0)


def test_version_tags_round_trip() -> None:
    tags = version_tags(METRICS, LINEAGE)
    assert tags["metrics.ndcg_at_10"] == "0.5"
    assert tags["lineage.partition_offsets"] == '{"0": 40, "1": 60}'
    assert tags["recsys.artifact"] == "model/model.npz"
    assert _parse_tags(tags) == (METRICS, LINEAGE)


def test_versions_registered_elsewhere_have_no_lineage() -> None:
    assert _parse_tags({"owner": "someone"}) == ({}, None)


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
