"""Catalogue items from files: MovieLens movies in each layout, mapped tables, synthetic."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys.events.v1.catalog_pb2 import Item
from services.data import items as item_files
from services.data.loaders import DataError
from services.data.synthetic import SyntheticData, SyntheticSpec


def flags(*genres: str) -> str:
    return "|".join("1" if g in genres else "0" for g in item_files.GENRES_100K)


@pytest.fixture
def movies(tmp_path: Path) -> dict[str, Path]:
    """One dataset directory per MovieLens layout, with the same two movies."""
    layouts = {
        "100k": ("u.item", "1|Toy Story (1995)|01-Jan-1995||http://x|"
                           f"{flags('Animation', 'Comedy')}\n"
                           f"2|Caf\xe9 (no year)|||http://y|{flags('unknown')}\n", "latin-1"),
        "1m": ("movies.dat", "1::Toy Story (1995)::Animation|Comedy\n"
                             "2::Caf\xe9 (no year)::(no genres listed)\n", "latin-1"),
        "latest": ("movies.csv", 'movieId,title,genres\n1,Toy Story (1995),Animation|Comedy\n'
                                 '2,"Caf\xe9 (no year)",(no genres listed)\n', "utf-8"),
    }
    found = {}
    for name, (file_name, text, encoding) in layouts.items():
        directory = tmp_path / name
        directory.mkdir()
        (directory / file_name).write_text(text, encoding=encoding)
        found[name] = directory
    return found


@pytest.mark.parametrize("layout", ["100k", "1m", "latest"])
def test_movies_give_genres_as_categories_year_labels_and_titles(
        movies: dict[str, Path], layout: str) -> None:
    toy, cafe = item_files.read_movies(movies[layout])
    assert toy == Item(item_id="1", title="Toy Story (1995)", categories=["Animation", "Comedy"],
                       labels=["year:1995", "decade:1990s"])
    assert cafe == Item(item_id="2", title="Caf\xe9 (no year)")
    assert item_files.count_movies(movies[layout]) == 2


def test_a_directory_without_a_movies_file_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"u\.item or movies\.dat or movies\.csv"):
        item_files.resolve_movies(tmp_path)


def test_a_mapped_table_gives_lists_titles_and_the_hidden_flag(tmp_path: Path) -> None:
    path = tmp_path / "items.csv"
    path.write_text("sku,cats,tags,name,gone\na1,books| fiction,author:x,Dune,yes\n"
                    "a2,,,,0\n")
    columns = item_files.ItemColumns(item="sku", categories="cats", labels="tags",
                                     title="name", hidden="gone")
    first, second = item_files.read_items(path, columns)
    assert first == Item(item_id="a1", categories=["books", "fiction"], labels=["author:x"],
                         title="Dune", hidden=True)
    assert second == Item(item_id="a2", hidden=False)
    table = tmp_path / "items.parquet"
    pq.write_table(pa.table({"sku": ["p1"], "cats": ["music"]}), table)
    assert list(item_files.read_items(table, item_files.ItemColumns(
        item="sku", categories="cats"))) == [Item(item_id="p1", categories=["music"])]


def test_a_missing_column_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "items.csv"
    path.write_text("sku\na1\n")
    with pytest.raises(DataError, match="no column 'cats'"):
        list(item_files.read_items(path, item_files.ItemColumns(item="sku", categories="cats")))


def test_synthetic_items_are_in_their_taste_cluster_category() -> None:
    data = SyntheticData(SyntheticSpec(users=50, items=40, events=100, seed=3))
    items = list(data.items())
    assert [item.item_id for item in items] == [f"i{n}" for n in range(40)]
    assert [item.categories[0] for item in items] == \
        [f"genre-{c}" for c in data.item_cluster.tolist()]
