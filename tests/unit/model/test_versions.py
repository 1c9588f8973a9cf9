"""The version tags the trainer writes and the recommender reads, and the lineage in them."""

from __future__ import annotations

from services.model.lineage import Lineage
from services.model.versions import parse_tags, version_tags

LINEAGE = Lineage(topic="interactions", row_count=100, content_hash="c0ffee",
                  partition_offsets={0: 40, 1: 60}, user_count=10, item_count=20)
METRICS = {"ndcg_at_10": 0.5, "precision_at_10": 0.4, "users_evaluated": 10.0}
HYPERPARAMETERS = {"factors": 64.0, "regularization": 0.02, "alpha": 2.5}


def test_version_tags_round_trip() -> None:
    tags = version_tags(METRICS, LINEAGE, HYPERPARAMETERS)
    assert tags["metrics.ndcg_at_10"] == "0.5"
    assert tags["lineage.partition_offsets"] == '{"0": 40, "1": 60}'
    assert tags["hyperparameters.regularization"] == "0.02"
    assert tags["recsys.artifact"] == "model/model.npz"
    assert parse_tags(tags) == (METRICS, LINEAGE, HYPERPARAMETERS)


def test_versions_registered_elsewhere_have_no_lineage() -> None:
    assert parse_tags({"owner": "someone"}) == ({}, None, {})


def test_lineage_round_trips_through_a_dict() -> None:
    lineage = Lineage(topic="t", row_count=3, content_hash="ab", partition_offsets={0: 1, 2: 9},
                      user_count=2, item_count=1)
    assert lineage.as_dict()["partition_offsets"] == {"0": 1, "2": 9}
    assert Lineage.from_dict(lineage.as_dict()) == lineage
