"""A job's snapshot as Parquet in object storage: what distributed workers read, and what a
model can be reproduced from. The SQLite store stays the exactly-once landing zone; this
copy is immutable and can be read again by any process that reaches the bucket.

Under the store's root, ``snapshots/<key>/`` holds:

- ``manifest.json``: the dataset's lineage (rows, offsets, content hash), the type weights,
  the buckets' bounds and every file's SHA-256. Written last: a folder without it is an
  export that did not finish, and is written again.
- ``users.parquet`` / ``items.parquet``: the id of each user / item index (``index_ids``).
- ``by_user/part-NNNNN.parquet``: the rows of the users of bucket NNNNN, in user order.
- ``by_item/part-NNNNN.parquet``: the same rows for the items of bucket NNNNN, in item order.

A row is one event that weighs more than 0 (`TrainingData`): ``row`` (its place in the
snapshot), ``user``, ``item``, ``weight`` and ``holdout`` (its pair is in the protocol's 25%
test split, which the evaluation fit leaves out). Each bucket is a range of user (or item)
indices holding about 1/BUCKETS of the rows; a group of N workers gives each worker BUCKETS/N
consecutive buckets, so a worker reads only the files of its own users and items. Within a
file rows keep their snapshot order, so a worker sums a repeated pair's weights exactly as
one process does.

The key hashes the lineage and the type weights: the same events weighed the same way give
the same snapshot, so a job run again after a failure reads the one already exported.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from services.core.errors import FailedPrecondition
from services.model.lineage import Lineage
from services.trainer.dataset import TrainingData
from services.trainer.model import Interactions, Shard
from services.trainer.object_store import ObjectStore

FORMAT = 1
# Buckets per side: the most workers a snapshot can be split between.
BUCKETS = 64
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Manifest:
    """What a snapshot holds and where; `files` maps each file to its SHA-256."""

    key: str
    lineage: Lineage
    type_weights: Mapping[str, float]
    rows: int
    holdout_rows: int
    user_bounds: tuple[int, ...]  # BUCKETS + 1 increasing user indices
    item_bounds: tuple[int, ...]
    files: Mapping[str, str]

    @property
    def n_users(self) -> int:
        return self.user_bounds[-1]

    @property
    def n_items(self) -> int:
        return self.item_bounds[-1]

    def to_json(self) -> bytes:
        return json.dumps({
            "format": FORMAT, "key": self.key, "lineage": self.lineage.as_dict(),
            "type_weights": dict(self.type_weights), "rows": self.rows,
            "holdout_rows": self.holdout_rows, "user_bounds": list(self.user_bounds),
            "item_bounds": list(self.item_bounds), "files": dict(self.files),
        }, indent=1, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        body: dict[str, Any] = json.loads(data)
        if body.get("format") != FORMAT:
            raise FailedPrecondition(f"snapshot format {body.get('format')!r} is not "
                                     f"{FORMAT}: export it again")
        return cls(key=body["key"], lineage=Lineage.from_dict(body["lineage"]),
                   type_weights=body["type_weights"], rows=body["rows"],
                   holdout_rows=body["holdout_rows"],
                   user_bounds=tuple(body["user_bounds"]),
                   item_bounds=tuple(body["item_bounds"]), files=body["files"])


@dataclass(frozen=True)
class Exported:
    """A snapshot in the store: its manifest's URI and content."""

    uri: str
    manifest: Manifest


def snapshot_key(lineage: Lineage, type_weights: Mapping[str, float]) -> str:
    content = json.dumps([FORMAT, lineage.as_dict(), dict(sorted(type_weights.items()))])
    return hashlib.sha256(content.encode()).hexdigest()[:32]


def folder(key: str) -> str:
    return f"snapshots/{key}"


def export(store: ObjectStore, data: TrainingData, *, lineage: Lineage,
           type_weights: Mapping[str, float], test: Interactions) -> Exported:
    """Write `data` (with `test`'s pairs marked holdout) unless it is there already."""
    key = snapshot_key(lineage, type_weights)
    base = folder(key)
    existing = store.read_if_exists(f"{base}/{MANIFEST}")
    if existing is not None:
        return Exported(store.uri(f"{base}/{MANIFEST}"), Manifest.from_json(existing))
    store.ensure_bucket()
    n_users, n_items = len(data.user_ids), len(data.item_ids)
    keys = data.users * n_items + data.items
    holdout = np.isin(keys, test.users * n_items + test.items)
    files: dict[str, str] = {}

    def put(name: str, table: pa.Table) -> None:
        buffer = io.BytesIO()
        pq.write_table(table, buffer)
        body = buffer.getvalue()
        store.write(f"{base}/{name}", body)
        files[name] = hashlib.sha256(body).hexdigest()

    put("users.parquet", pa.table({"user_id": pa.array(data.user_ids.tolist(), pa.string())}))
    put("items.parquet", pa.table({"item_id": pa.array(data.item_ids.tolist(), pa.string())}))
    columns = {"row": np.arange(len(data), dtype=np.int64), "user": data.users,
               "item": data.items, "weight": data.weights, "holdout": holdout}
    bounds = {}
    for side, index, n in (("user", data.users, n_users), ("item", data.items, n_items)):
        bounds[side] = _bounds(index, n)
        order = np.argsort(index, kind="stable")  # snapshot order within a user (item)
        starts = np.searchsorted(index[order], bounds[side])
        for bucket in range(BUCKETS):
            rows = order[starts[bucket]:starts[bucket + 1]]
            put(_part(side, bucket), pa.table({k: v[rows] for k, v in columns.items()}))
    manifest = Manifest(key=key, lineage=lineage, type_weights=dict(type_weights),
                        rows=len(data), holdout_rows=int(holdout.sum()),
                        user_bounds=tuple(bounds["user"]), item_bounds=tuple(bounds["item"]),
                        files=files)
    store.write(f"{base}/{MANIFEST}", manifest.to_json())
    return Exported(store.uri(f"{base}/{MANIFEST}"), manifest)


def _bounds(index: np.ndarray, n: int) -> list[int]:
    """BUCKETS + 1 bounds cutting indices 0..n into ranges of about equal row counts."""
    cumulative = np.cumsum(np.bincount(index, minlength=n))
    targets = np.arange(1, BUCKETS) * (len(index) / BUCKETS)
    inner = np.minimum(np.searchsorted(cumulative, targets) + 1, n)
    return [0, *inner.tolist(), n]


def _part(side: str, bucket: int) -> str:
    return f"by_{side}/part-{bucket:05d}.parquet"


def load_manifest(store: ObjectStore, uri: str) -> Manifest:
    return Manifest.from_json(store.read(store.relative(uri)))


def _read(store: ObjectStore, manifest: Manifest, name: str) -> pa.Table:
    """One file of the snapshot, checked against the manifest's SHA-256."""
    body = store.read(f"{folder(manifest.key)}/{name}")
    if hashlib.sha256(body).hexdigest() != manifest.files[name]:
        raise FailedPrecondition(f"snapshot {manifest.key}: {name} does not match its "
                                 "manifest's SHA-256")
    return pq.read_table(io.BytesIO(body))


def _read_parts(store: ObjectStore, manifest: Manifest, side: str,
                buckets: Sequence[int]) -> dict[str, np.ndarray]:
    table = pa.concat_tables([_read(store, manifest, _part(side, b)) for b in buckets])
    return {name: table.column(name).to_numpy() for name in table.column_names}


def read_training_data(store: ObjectStore, uri: str) -> tuple[TrainingData, Manifest]:
    """The whole snapshot back, rows in their original order: what was exported."""
    manifest = load_manifest(store, uri)
    rows = _read_parts(store, manifest, "user", range(BUCKETS))
    order = np.argsort(rows["row"])

    def ids(name: str, column: str) -> np.ndarray:
        values = _read(store, manifest, name).column(column).to_pylist()
        return np.array(values, dtype=object)

    data = TrainingData(users=rows["user"][order], items=rows["item"][order],
                        weights=rows["weight"][order], user_ids=ids("users.parquet", "user_id"),
                        item_ids=ids("items.parquet", "item_id"))
    return data, manifest


def worker_buckets(rank: int, world: int) -> range:
    """The buckets of worker `rank` of `world`: consecutive, the same count give or take one."""
    if not 0 <= rank < world <= BUCKETS:
        raise ValueError(f"rank {rank} of {world}: a snapshot splits between 1 to {BUCKETS}")
    return range(rank * BUCKETS // world, (rank + 1) * BUCKETS // world)


@dataclass(frozen=True)
class WorkerShards:
    """A worker's rows for the served model's fit (`full`) and the evaluation's (`holdout`:
    the same rows without the test split's pairs)."""

    full: Shard
    holdout: Shard


def read_shards(store: ObjectStore, manifest: Manifest, *, rank: int,
                world: int) -> WorkerShards:
    """Worker `rank`'s users and items, with their rows: only its own buckets' files."""
    buckets = worker_buckets(rank, world)
    first, end = buckets.start, buckets.stop
    user_start, user_end = manifest.user_bounds[first], manifest.user_bounds[end]
    item_start, item_end = manifest.item_bounds[first], manifest.item_bounds[end]
    by_user = _read_parts(store, manifest, "user", buckets)
    by_item = _read_parts(store, manifest, "item", buckets)

    def shard(keep_holdout: bool) -> Shard:
        u = by_user if keep_holdout else {k: v[~by_user["holdout"]] for k, v in by_user.items()}
        i = by_item if keep_holdout else {k: v[~by_item["holdout"]] for k, v in by_item.items()}
        return Shard(
            users=Interactions.from_arrays(u["user"] - user_start, u["item"], u["weight"],
                                           n_users=user_end - user_start,
                                           n_items=manifest.n_items),
            items=Interactions.from_arrays(i["item"] - item_start, i["user"], i["weight"],
                                           n_users=item_end - item_start,
                                           n_items=manifest.n_users),
            user_start=user_start, item_start=item_start)

    return WorkerShards(full=shard(True), holdout=shard(False))
