"""Which data a model was trained on (`recsys.model.v1.DatasetLineage`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Lineage:
    """Which data a snapshot holds; the content hash ignores where the events were read.

    The catalogue fields say how far the trainer had read the catalogue topic when the
    snapshot was cut (every erasure before that was done before it) and what the catalogue
    kept beside the events held; a version registered before the catalogue existed has none.
    """

    topic: str
    row_count: int
    content_hash: str
    partition_offsets: Mapping[int, int]
    user_count: int
    item_count: int
    catalog_topic: str = ""
    catalog_offsets: Mapping[int, int] = field(default_factory=dict)
    catalog_item_count: int = 0
    catalog_user_count: int = 0
    catalog_content_hash: str = ""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (partition numbers become strings)."""
        return {
            "topic": self.topic,
            "row_count": self.row_count,
            "content_hash": self.content_hash,
            "partition_offsets": _json_offsets(self.partition_offsets),
            "user_count": self.user_count,
            "item_count": self.item_count,
            "catalog_topic": self.catalog_topic,
            "catalog_offsets": _json_offsets(self.catalog_offsets),
            "catalog_item_count": self.catalog_item_count,
            "catalog_user_count": self.catalog_user_count,
            "catalog_content_hash": self.catalog_content_hash,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Lineage:
        return cls(
            topic=str(data["topic"]),
            row_count=int(data["row_count"]),
            content_hash=str(data["content_hash"]),
            partition_offsets=_offsets(data["partition_offsets"]),
            user_count=int(data["user_count"]),
            item_count=int(data["item_count"]),
            catalog_topic=str(data.get("catalog_topic", "")),
            catalog_offsets=_offsets(data.get("catalog_offsets", {})),
            catalog_item_count=int(data.get("catalog_item_count", 0)),
            catalog_user_count=int(data.get("catalog_user_count", 0)),
            catalog_content_hash=str(data.get("catalog_content_hash", "")),
        )


def _json_offsets(offsets: Mapping[int, int]) -> dict[str, int]:
    return {str(p): o for p, o in sorted(offsets.items())}


def _offsets(data: Mapping[Any, Any]) -> dict[int, int]:
    return {int(p): int(o) for p, o in data.items()}
