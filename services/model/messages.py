"""Models as `recsys.model.v1` messages: the trainer's API and the recommender's GetModelInfo
describe a model the same way."""

from __future__ import annotations

from collections.abc import Mapping

from google.protobuf.timestamp_pb2 import Timestamp

from recsys.model.v1 import model_pb2
from services.model.lineage import Lineage
from services.model.versions import VersionInfo

_METRIC_FIELDS = ("precision_at_10", "recall_at_10", "ndcg_at_10", "map_at_10",
                  "popularity_ndcg_at_10")


def metrics_to_proto(metrics: Mapping[str, float]) -> model_pb2.EvaluationMetrics | None:
    if not metrics:
        return None
    return model_pb2.EvaluationMetrics(
        **{name: metrics[name] for name in _METRIC_FIELDS if name in metrics},
        users_evaluated=int(metrics.get("users_evaluated", 0)),
    )


def lineage_to_proto(lineage: Lineage | None) -> model_pb2.DatasetLineage | None:
    if lineage is None:
        return None
    return model_pb2.DatasetLineage(
        row_count=lineage.row_count, content_hash=lineage.content_hash,
        partition_offsets=dict(lineage.partition_offsets), topic=lineage.topic,
        user_count=lineage.user_count, item_count=lineage.item_count,
        catalog_topic=lineage.catalog_topic, catalog_offsets=dict(lineage.catalog_offsets),
        catalog_item_count=lineage.catalog_item_count,
        catalog_user_count=lineage.catalog_user_count,
        catalog_content_hash=lineage.catalog_content_hash,
    )


def version_to_proto(version: VersionInfo) -> model_pb2.ModelVersion:
    created_at = None
    if version.created_at_ms:
        created_at = Timestamp()
        created_at.FromMilliseconds(version.created_at_ms)
    return model_pb2.ModelVersion(
        version=version.version,
        model_name=version.model_name,
        aliases=list(version.aliases),
        mlflow_run_id=version.run_id,
        metrics=metrics_to_proto(version.metrics),
        lineage=lineage_to_proto(version.lineage),
        created_at=created_at,
    )
