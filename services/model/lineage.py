"""Which data a model was trained on (`recsys.model.v1.DatasetLineage`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Lineage:
    """Which data a snapshot holds; the content hash ignores where the events were read."""

    topic: str
    row_count: int
    content_hash: str
    partition_offsets: Mapping[int, int]
    user_count: int
    item_count: int

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (partition numbers become strings)."""
        return {
            "topic": self.topic,
            "row_count": self.row_count,
            "content_hash": self.content_hash,
            "partition_offsets": {str(p): o for p, o in sorted(self.partition_offsets.items())},
            "user_count": self.user_count,
            "item_count": self.item_count,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Lineage:
        return cls(
            topic=str(data["topic"]),
            row_count=int(data["row_count"]),
            content_hash=str(data["content_hash"]),
            partition_offsets={int(p): int(o) for p, o in data["partition_offsets"].items()},
            user_count=int(data["user_count"]),
            item_count=int(data["item_count"]),
        )
