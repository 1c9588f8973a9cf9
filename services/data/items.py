"""Catalogue items from files: MovieLens movies (`u.item`, `movies.dat`, `movies.csv`) and any
CSV/Parquet table with a column mapping.

Like the interaction loaders, these stream and do not validate: CatalogService rejects a bad
item with its index and a reason. A MovieLens movie's genres become its categories, its year
(from the title) its labels `year:1995` and `decade:1990s`, its title the title.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recsys.events.v1.catalog_pb2 import Item
from services.data.loaders import (
    DataError,
    MovieLensFormat,
    TableFormat,
    count_rows,
    table_rows,
)

# ml-100k's u.genre, in the order of u.item's 19 genre flags.
GENRES_100K = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
    "Sci-Fi", "Thriller", "War", "Western",
)
# format -> the movies file inside the dataset directory
_MOVIES = {"100k": "u.item", "1m": "movies.dat", "latest": "movies.csv"}
_YEAR = re.compile(r"\((\d{4})\)\s*$")
_NO_GENRES = "(no genres listed)"


def resolve_movies(path: Path, fmt: MovieLensFormat = "auto") -> tuple[Path, str]:
    """The movies file and its format, from a dataset directory or the file itself."""
    path = Path(path)
    candidates = [fmt] if fmt != "auto" else list(_MOVIES)
    for name in candidates:
        if path.is_dir() and (path / _MOVIES[name]).is_file():
            return path / _MOVIES[name], name
        if path.is_file() and (fmt != "auto" or path.name == _MOVIES[name]):
            return path, name
    expected = " or ".join(_MOVIES[name] for name in candidates)
    raise DataError(f"{path}: no MovieLens movies file ({expected}) found")


def read_movies(path: Path, fmt: MovieLensFormat = "auto") -> Iterator[Item]:
    """Every movie as a catalogue item: genres as categories, year labels, title."""
    file, name = resolve_movies(path, fmt)
    if name == "latest":
        with file.open(encoding="utf-8", errors="replace", newline="") as lines:
            for row in csv.DictReader(lines):
                yield movie(row["movieId"], row["title"], row["genres"].split("|"))
        return
    # u.item and movies.dat are Latin-1.
    with file.open(encoding="latin-1", newline="") as lines:
        for line in lines:
            if not line.strip():
                continue
            if name == "100k":
                fields = line.rstrip("\r\n").split("|")
                flags = fields[5:5 + len(GENRES_100K)]
                yield movie(fields[0], fields[1],
                            [g for g, flag in zip(GENRES_100K, flags, strict=False)
                             if flag == "1"])
            else:
                movie_id, title, genres = [*line.rstrip("\r\n").split("::"), "", ""][:3]
                yield movie(movie_id, title, genres.split("|"))


def count_movies(path: Path, fmt: MovieLensFormat = "auto") -> int:
    file, name = resolve_movies(path, fmt)
    rows = count_rows(file, fmt="csv")  # lines less a header line
    return rows if name == "latest" else rows + 1  # u.item and movies.dat have none


def movie(movie_id: str, title: str, genres: Sequence[str]) -> Item:
    """A MovieLens movie as an item; "(no genres listed)" and "unknown" are no category."""
    labels = []
    if year := _YEAR.search(title):
        labels = [f"year:{year[1]}", f"decade:{year[1][:3]}0s"]
    categories = [g for g in genres if g and g not in (_NO_GENRES, "unknown")]
    return Item(item_id=movie_id.strip(), title=title.strip(), categories=categories,
                labels=labels)


@dataclass(frozen=True, kw_only=True)
class ItemColumns:
    """Which table columns hold which item fields; list columns (categories, labels) hold
    their values joined by `separator`."""

    item: str
    categories: str | None = None
    labels: str | None = None
    title: str | None = None
    hidden: str | None = None
    separator: str = "|"

    def names(self) -> list[str]:
        optional = (self.categories, self.labels, self.title, self.hidden)
        return [self.item, *(c for c in optional if c)]

    def item_of(self, row: Mapping[str, Any]) -> Item:
        item = Item(item_id=_text(row[self.item]),
                    categories=self._list(row, self.categories),
                    labels=self._list(row, self.labels),
                    title=_text(row[self.title]) if self.title else "")
        if self.hidden:
            item.hidden = _text(row[self.hidden]).lower() in ("1", "true", "yes")
        return item

    def _list(self, row: Mapping[str, Any], column: str | None) -> list[str]:
        if column is None:
            return []
        return [v.strip() for v in _text(row[column]).split(self.separator) if v.strip()]


def read_items(path: Path, columns: ItemColumns, *, fmt: TableFormat = "auto",
               delimiter: str = ",") -> Iterator[Item]:
    """One item per row of a CSV (with a header line) or Parquet file."""
    for row in table_rows(path, columns.names(), fmt=fmt, delimiter=delimiter):
        yield columns.item_of(row)


def _text(raw: Any) -> str:
    return "" if raw is None else str(raw).strip()
