"""Interaction events from files: MovieLens (100k, 1m, latest) and any CSV/Parquet table.

Loaders stream: they yield one `Interaction` at a time and never hold a file in memory. They
do not validate: a field that cannot be read is left empty, so IngestService rejects the event
with its index (the data row, from 0) and a reason, exactly as for any other client.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from recsys.events.v1 import interaction_pb2

Interaction = interaction_pb2.Interaction
RATING = interaction_pb2.INTERACTION_TYPE_RATING

MovieLensFormat = Literal["auto", "100k", "1m", "latest"]
TimeUnit = Literal["s", "ms", "iso"]
TableFormat = Literal["auto", "csv", "parquet"]

# format -> (file name inside the dataset directory, field separator, header line?)
_MOVIELENS: dict[str, tuple[str, str, bool]] = {
    "100k": ("u.data", "\t", False),
    "1m": ("ratings.dat", "::", False),
    "latest": ("ratings.csv", ",", True),
}


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


class DataError(ValueError):
    """The input cannot be read as asked (missing file or column, unknown format)."""


# -- building events -------------------------------------------------------------------------


def parse_type(text: str) -> int:
    """An InteractionType from a name ("view", "add-to-cart", "INTERACTION_TYPE_VIEW") or number;
    UNSPECIFIED when unknown (the service rejects it)."""
    name = text.strip().upper().replace("-", "_").replace(" ", "_")
    if name.isdigit():
        return int(name)
    if not name.startswith("INTERACTION_TYPE_"):
        name = f"INTERACTION_TYPE_{name}"
    try:
        return interaction_pb2.InteractionType.Value(name)
    except ValueError:
        return interaction_pb2.INTERACTION_TYPE_UNSPECIFIED


def _epoch_nanos(raw: Any, unit: TimeUnit) -> int | None:
    """Nanoseconds since the epoch from a cell (exact for integers and decimal text), or
    None when it cannot be read."""
    if raw is None or raw == "":
        return None
    try:
        if isinstance(raw, datetime):
            moment = raw if raw.tzinfo else raw.replace(tzinfo=UTC)
            return (moment - _EPOCH) // _MICROSECOND * 1000
        if unit == "iso":
            return _epoch_nanos(datetime.fromisoformat(str(raw).strip()), unit)
        scale = 1_000_000 if unit == "ms" else 1_000_000_000
        if isinstance(raw, int):
            return raw * scale
        text = str(raw).strip()
        if text.isdigit():  # the common case (epoch integers), without Decimal's cost
            return int(text) * scale
        number = Decimal(text)
        return int(number * scale) if number.is_finite() else None
    except (ValueError, ArithmeticError):
        return None


def make_event(*, user_id: str, item_id: str, type_: int, value: float | None = None,
               occurred_ns: int | None = None, event_id: str = "",
               context: Mapping[str, str] | None = None) -> Interaction:
    event = Interaction(user_id=user_id, item_id=item_id, type=type_, event_id=event_id)  # type: ignore[arg-type]
    if value is not None:
        event.value = value
    if occurred_ns is not None:
        event.occurred_at.seconds, event.occurred_at.nanos = divmod(occurred_ns, 1_000_000_000)
    if context:
        event.context.update(context)
    return event


# -- MovieLens -------------------------------------------------------------------------------


def resolve_movielens(path: Path, fmt: MovieLensFormat = "auto") -> tuple[Path, str]:
    """The ratings file and its format, from a dataset directory or the file itself."""
    path = Path(path)
    candidates = [fmt] if fmt != "auto" else list(_MOVIELENS)
    for name in candidates:
        file_name = _MOVIELENS[name][0]
        if path.is_dir() and (path / file_name).is_file():
            return path / file_name, name
        if path.is_file() and (fmt != "auto" or path.name == file_name):
            return path, name
    expected = " or ".join(_MOVIELENS[name][0] for name in candidates)
    raise DataError(f"{path}: no MovieLens ratings file ({expected}) found")


def read_movielens(path: Path, fmt: MovieLensFormat = "auto") -> Iterator[Interaction]:
    """Every rating as an INTERACTION_TYPE_RATING event (user, movie, stars, time)."""
    file, name = resolve_movielens(path, fmt)
    _, separator, header = _MOVIELENS[name]
    with file.open(encoding="utf-8", errors="replace", newline="") as lines:
        if header:
            next(lines, None)
        for line in lines:
            fields = line.rstrip("\r\n").split(separator)
            if len(fields) < 4:
                fields += [""] * (4 - len(fields))
            user, item, rating, stamp = fields[:4]
            yield make_event(user_id=user, item_id=item, type_=RATING,
                             value=_float_or_none(rating), occurred_ns=_epoch_nanos(stamp, "s"))


def count_movielens(path: Path, fmt: MovieLensFormat = "auto") -> int:
    file, name = resolve_movielens(path, fmt)
    return _count_lines(file) - (1 if _MOVIELENS[name][2] else 0)


# -- generic tables --------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Columns:
    """Which table columns hold which event fields. Exactly one of `type` (a column) and
    `fixed_type` (one type for every row) is set."""

    user: str
    item: str
    time: str
    time_unit: TimeUnit = "s"
    value: str | None = None
    type: str | None = None
    fixed_type: int | None = None
    event_id: str | None = None
    context: Sequence[str] = ()

    def __post_init__(self) -> None:
        if (self.type is None) == (self.fixed_type is None):
            raise DataError("give either a type column or one type for every row")

    def names(self) -> list[str]:
        optional = (self.value, self.type, self.event_id)
        return [self.user, self.item, self.time, *(c for c in optional if c), *self.context]

    def event(self, row: Mapping[str, Any]) -> Interaction:
        value = row[self.value] if self.value else None
        kind = parse_type(str(row[self.type] or "")) if self.type else self.fixed_type
        context = {name: str(row[name]) for name in self.context if row[name] not in (None, "")}
        return make_event(
            user_id=_text(row[self.user]), item_id=_text(row[self.item]),
            type_=kind or 0, value=_float_or_none(value),
            occurred_ns=_epoch_nanos(row[self.time], self.time_unit),
            event_id=_text(row[self.event_id]) if self.event_id else "",
            context=context)


def table_format(path: Path, fmt: TableFormat = "auto") -> Literal["csv", "parquet"]:
    if fmt != "auto":
        return fmt
    return "parquet" if Path(path).suffix.lower() in (".parquet", ".pq") else "csv"


def read_table(path: Path, columns: Columns, *, fmt: TableFormat = "auto",
               delimiter: str = ",") -> Iterator[Interaction]:
    """One event per row of a CSV (with a header line) or Parquet file."""
    for row in table_rows(path, columns.names(), fmt=fmt, delimiter=delimiter):
        yield columns.event(row)


def table_rows(path: Path, names: Sequence[str], *, fmt: TableFormat = "auto",
               delimiter: str = ",") -> Iterator[dict[str, Any]]:
    """The columns `names` of each row of a CSV (with a header line) or Parquet file; a
    missing file or column is a DataError at once."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if table_format(path, fmt) == "parquet":
        return _parquet_rows(path, names)
    return _csv_rows(path, names, delimiter)


def count_rows(path: Path, *, fmt: TableFormat = "auto") -> int:
    if table_format(path, fmt) == "parquet":
        import pyarrow.parquet as pq

        return int(pq.ParquetFile(path).metadata.num_rows)
    return max(0, _count_lines(Path(path)) - 1)


def _csv_rows(path: Path, names: Sequence[str], delimiter: str) -> Iterator[dict[str, str]]:
    with path.open(encoding="utf-8", errors="replace", newline="") as file:
        reader = csv.reader(file, delimiter=delimiter)
        header = next(reader, [])
        _require(path, names, header)
        positions = {name: header.index(name) for name in names}
        for record in reader:
            if not record:
                continue
            yield {name: record[i] if i < len(record) else "" for name, i in positions.items()}


def _parquet_rows(path: Path, names: Sequence[str]) -> Iterator[dict[str, Any]]:
    import pyarrow.parquet as pq

    table = pq.ParquetFile(path)
    unique = list(dict.fromkeys(names))
    _require(path, unique, table.schema_arrow.names)
    for batch in table.iter_batches(batch_size=10_000, columns=unique):
        data = batch.to_pydict()
        for values in zip(*(data[name] for name in unique), strict=True):
            yield dict(zip(unique, values, strict=True))


def _require(path: Path, wanted: Sequence[str], present: Sequence[str]) -> None:
    missing = [name for name in wanted if name not in present]
    if missing:
        raise DataError(
            f"{path}: no column {missing[0]!r} (columns: {', '.join(present) or 'none'})")


def _text(raw: Any) -> str:
    return "" if raw is None else str(raw).strip()


def _float_or_none(raw: Any) -> float | None:
    if raw is None or raw == "":
        return None
    try:
        return float(raw)
    except ValueError:
        return math.nan  # present but unreadable: the service rejects it as out of range


def _count_lines(path: Path) -> int:
    """Lines in a file (a last line without a newline counts), read in 1 MiB blocks."""
    count, last = 0, b"\n"
    with path.open("rb") as file:
        while block := file.read(1 << 20):
            count += block.count(b"\n")
            last = block[-1:]
    return count + (last != b"\n")
