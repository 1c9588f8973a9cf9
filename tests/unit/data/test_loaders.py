"""File loaders: MovieLens layouts and mapped CSV/Parquet tables, streamed as events."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys.events.v1 import interaction_pb2
from services.data import loaders

RATING = interaction_pb2.INTERACTION_TYPE_RATING


def triples(events: list[interaction_pb2.Interaction]) -> list[tuple[str, str, float, int]]:
    return [(e.user_id, e.item_id, e.value, e.occurred_at.seconds) for e in events]


@pytest.fixture
def movielens(tmp_path: Path) -> dict[str, Path]:
    """One small dataset directory per MovieLens layout, with the same three ratings."""
    layouts = {
        "100k": ("u.data", "196\t242\t3\t881250949\n186\t302\t4.5\t891717742\n"
                           "22\t377\t1\t878887116\n"),
        "1m": ("ratings.dat", "196::242::3::881250949\n186::302::4.5::891717742\n"
                              "22::377::1::878887116\n"),
        "latest": ("ratings.csv", "userId,movieId,rating,timestamp\n196,242,3.0,881250949\n"
                                  "186,302,4.5,891717742\n22,377,1.0,878887116\n"),
    }
    paths = {}
    for name, (file_name, text) in layouts.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / file_name).write_text(text)
        paths[name] = tmp_path / name
    return paths


@pytest.mark.parametrize("layout", ["100k", "1m", "latest"])
def test_every_movielens_layout_reads_as_rating_events(
    movielens: dict[str, Path], layout: str
) -> None:
    for path, fmt in [(movielens[layout], "auto"), (movielens[layout], layout)]:
        events = list(loaders.read_movielens(path, fmt))  # type: ignore[arg-type]
        assert triples(events) == [("196", "242", 3.0, 881250949),
                                   ("186", "302", 4.5, 891717742),
                                   ("22", "377", 1.0, 878887116)]
        assert {e.type for e in events} == {RATING}
        assert not any(e.event_id for e in events)  # the service derives stable ids
        assert loaders.count_movielens(path, fmt) == 3  # type: ignore[arg-type]


def test_a_movielens_file_can_be_named_directly(movielens: dict[str, Path]) -> None:
    file = movielens["1m"] / "ratings.dat"
    assert loaders.resolve_movielens(file) == (file, "1m")
    assert len(list(loaders.read_movielens(file))) == 3


def test_a_missing_movielens_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(loaders.DataError, match="no MovieLens ratings file"):
        list(loaders.read_movielens(tmp_path))
    with pytest.raises(loaders.DataError, match=r"ratings\.dat"):
        loaders.resolve_movielens(tmp_path, "1m")


def test_unreadable_fields_are_left_for_the_service_to_reject(tmp_path: Path) -> None:
    (tmp_path / "u.data").write_text("1\t2\tfive\tyesterday\n3\n")
    first, second = loaders.read_movielens(tmp_path)
    assert first.HasField("value") and first.value != first.value  # NaN: out of range
    assert not first.HasField("occurred_at")
    assert (second.user_id, second.item_id) == ("3", "")


def test_a_csv_table_is_mapped_column_by_column(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text(
        "who;what;when;kind;qty;id;device\n"
        "alice;book;2024-03-01T10:00:00.250Z;purchase;2;e1;ios\n"
        "bob;pen;2024-03-01T11:00:00+01:00;add-to-cart;;;\n"
        "carol;ink;not a time;teleport;1;e3;web\n")
    columns = loaders.Columns(user="who", item="what", time="when", time_unit="iso",
                              type="kind", value="qty", event_id="id", context=("device",))
    alice, bob, carol = loaders.read_table(path, columns, delimiter=";")
    assert (alice.user_id, alice.item_id, alice.type, alice.value, alice.event_id) == (
        "alice", "book", interaction_pb2.INTERACTION_TYPE_PURCHASE, 2.0, "e1")
    assert alice.occurred_at.ToJsonString() == "2024-03-01T10:00:00.250Z"
    assert dict(alice.context) == {"device": "ios"}
    assert bob.type == interaction_pb2.INTERACTION_TYPE_ADD_TO_CART
    assert not bob.HasField("value") and not bob.event_id and not bob.context
    assert bob.occurred_at.ToJsonString() == "2024-03-01T10:00:00Z"
    assert carol.type == interaction_pb2.INTERACTION_TYPE_UNSPECIFIED
    assert not carol.HasField("occurred_at")
    assert loaders.count_rows(path) == 3


def test_a_parquet_table_with_one_type_for_every_row(tmp_path: Path) -> None:
    path = tmp_path / "likes.parquet"
    pq.write_table(pa.table({
        "user": [1, 2], "item": ["a", "b"], "ms": [1_700_000_000_123, 1_700_000_001_000]}), path)
    columns = loaders.Columns(user="user", item="item", time="ms", time_unit="ms",
                              fixed_type=interaction_pb2.INTERACTION_TYPE_LIKE)
    events = list(loaders.read_table(path, columns))
    assert [(e.user_id, e.item_id, e.type) for e in events] == [
        ("1", "a", interaction_pb2.INTERACTION_TYPE_LIKE),
        ("2", "b", interaction_pb2.INTERACTION_TYPE_LIKE)]
    assert events[0].occurred_at.ToNanoseconds() == 1_700_000_000_123_000_000
    assert loaders.count_rows(path) == 2


def test_a_missing_column_names_it(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("user,item\nu,i\n")
    columns = loaders.Columns(user="user", item="item", time="ts", fixed_type=RATING)
    with pytest.raises(loaders.DataError, match="no column 'ts' \\(columns: user, item\\)"):
        list(loaders.read_table(path, columns))


def test_columns_need_exactly_one_source_of_type() -> None:
    with pytest.raises(loaders.DataError):
        loaders.Columns(user="u", item="i", time="t")
    with pytest.raises(loaders.DataError):
        loaders.Columns(user="u", item="i", time="t", type="k", fixed_type=RATING)


@pytest.mark.parametrize(("text", "expected"), [
    ("view", interaction_pb2.INTERACTION_TYPE_VIEW),
    ("Add-To-Cart", interaction_pb2.INTERACTION_TYPE_ADD_TO_CART),
    ("INTERACTION_TYPE_SHARE", interaction_pb2.INTERACTION_TYPE_SHARE),
    ("5", interaction_pb2.INTERACTION_TYPE_RATING),
    ("nonsense", interaction_pb2.INTERACTION_TYPE_UNSPECIFIED),
])
def test_type_names(text: str, expected: int) -> None:
    assert loaders.parse_type(text) == expected
