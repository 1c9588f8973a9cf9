"""A catalogue served through the item index by a real recommender (MLflow, Redis, gRPC);
top lists off, so that every answer is scored."""

from __future__ import annotations

from pathlib import Path

import pytest

from recsys.recommender.v1 import recommender_pb2
from services.recommender.item_index import MAX_SCANNED
from services.recommender.scoring import Query, Scorer
from tests.support.artifacts import clustered_artifact
from tests.support.model_registry import publish
from tests.support.recommender_replica import ReplicaFactory

pytestmark = pytest.mark.integration

USERS = [f"u{n}" for n in range(0, 400, 8)]


async def test_a_large_catalogue_is_served_through_a_calibrated_index(
        replica: ReplicaFactory, servers: dict[str, str], model_name: str,
        tmp_path: Path) -> None:
    artifact = clustered_artifact()
    version = publish(servers["mlflow_tracking_uri"], model_name, artifact, tmp_path)
    exact = Scorer(artifact).recommend_many([Query(user, 10) for user in USERS])
    async with replica(**servers, index_min_items=artifact.n_items,
                       index_target_recall=0.9, top_lists_max_cells=0) as r:
        await r.wait_for_version(version)
        recall = r.metric("recsys_recommender_index_recall")
        scanned = r.metric("recsys_recommender_index_scanned_ratio")
        assert recall >= 0.9 and scanned <= MAX_SCANNED
        info = await r.stub.GetModelInfo(recommender_pb2.GetModelInfoRequest(), timeout=5)
        assert info.scoring.approximate
        assert (info.scoring.recall_at_10, info.scoring.scanned_ratio) == \
            (pytest.approx(recall), pytest.approx(scanned))
        found = 0
        for user, (_, expected) in zip(USERS, exact, strict=True):
            reply = await r.recommend(user, k=10)
            items = {item.item_id for item in reply.items}
            assert len(items) == 10
            assert not items & {f"i{i}" for i in artifact.seen(int(user[1:]))}
            found += len(items & {item for item, _ in expected})
        assert found / (10 * len(USERS)) >= 0.85


async def test_below_the_size_threshold_scoring_stays_exact(
        replica: ReplicaFactory, servers: dict[str, str], model_name: str,
        tmp_path: Path) -> None:
    artifact = clustered_artifact()
    version = publish(servers["mlflow_tracking_uri"], model_name, artifact, tmp_path)
    async with replica(**servers, index_min_items=artifact.n_items + 1,
                       top_lists_max_cells=0) as r:
        await r.wait_for_version(version)
        assert r.metric("recsys_recommender_index_scanned_ratio") == 1.0
        assert r.metric("recsys_recommender_index_recall") == 1.0
        ((_, expected),) = Scorer(artifact).recommend_many([Query("u8", 10)])
        reply = await r.recommend("u8", k=10)
        assert [(i.item_id, pytest.approx(i.score, rel=1e-5)) for i in reply.items] == \
            list(expected)
