"""Model versions, metrics and lineage as `recsys.model.v1` messages."""

from __future__ import annotations

from services.model.lineage import Lineage
from services.model.messages import lineage_to_proto, metrics_to_proto, version_to_proto
from services.model.versions import VersionInfo


def test_a_model_version() -> None:
    proto = version_to_proto(VersionInfo(
        version="3", model_name="m", aliases=("champion",), run_id="r",
        source="mlflow-artifacts:/1/r/artifacts/model", metrics={"ndcg_at_10": 0.5},
        lineage=None, created_at_ms=1_500))
    assert list(proto.aliases) == ["champion"]
    assert proto.metrics.ndcg_at_10 == 0.5
    assert not proto.HasField("lineage")
    assert proto.created_at.ToMilliseconds() == 1_500


def test_a_version_without_a_creation_time_has_none() -> None:
    proto = version_to_proto(VersionInfo(
        version="1", model_name="m", aliases=(), run_id="", source="", metrics={},
        lineage=None, created_at_ms=0))
    assert not proto.HasField("created_at") and not proto.HasField("metrics")


def test_metrics_and_lineage() -> None:
    metrics = metrics_to_proto({"ndcg_at_10": 0.5, "map_at_10": 0.25, "loss": 3.0,
                                "users_evaluated": 9.0})
    assert metrics is not None
    assert (metrics.ndcg_at_10, metrics.map_at_10, metrics.users_evaluated) == (0.5, 0.25, 9)
    assert metrics_to_proto({}) is None
    lineage = lineage_to_proto(Lineage(topic="t", row_count=7, content_hash="ff",
                                       partition_offsets={0: 3, 1: 4}, user_count=2,
                                       item_count=3))
    assert lineage is not None
    assert dict(lineage.partition_offsets) == {0: 3, 1: 4}
    assert (lineage.topic, lineage.row_count, lineage.user_count) == ("t", 7, 2)
    assert lineage_to_proto(None) is None
