"""Dataset files: schema and row count read, unreadable files refused by name."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from maas.errors import InvalidDataset
from maas.jobs.tabular import format_of, inspect_table


def test_csv_jsonl_and_parquet_are_inspected(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("text,label,score\nhello,a,1.5\nworld,b,2\n")
    (tmp_path / "t.jsonl").write_text(
        '{"x": 1, "y": "a"}\n{"x": 2, "y": "b"}\n{"x": 3, "y": "c"}\n'
    )
    pq.write_table(pa.table({"f": [1.0, 2.0], "n": [1, 2]}), tmp_path / "t.parquet")
    assert inspect_table(tmp_path / "t.csv", "csv") == (
        2,
        [
            {"name": "text", "type": "string"},
            {"name": "label", "type": "string"},
            {"name": "score", "type": "double"},
        ],
    )
    assert inspect_table(tmp_path / "t.jsonl", "jsonl")[0] == 3
    assert inspect_table(tmp_path / "t.parquet", "parquet") == (
        2,
        [{"name": "f", "type": "double"}, {"name": "n", "type": "int64"}],
    )


@pytest.mark.parametrize(
    ("name", "content", "fmt", "words"),
    [
        ("ragged.csv", b"a,b\n1,2\n3\n", "csv", "Expected 2 columns"),
        ("empty.csv", b"a,b\n", "csv", "no rows"),
        ("bad.jsonl", b"[1, 2]\n", "jsonl", "JSONL"),
        ("bad.parquet", b"not parquet at all", "parquet", "PARQUET"),
    ],
)
def test_unreadable_files_are_refused(
    tmp_path: Path, name: str, content: bytes, fmt: str, words: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InvalidDataset, match=words):
        inspect_table(path, fmt)


def test_format_comes_from_the_name_or_is_declared() -> None:
    assert format_of("x.CSV") == "csv" and format_of("x.ndjson") == "jsonl"
    assert format_of("x.bin", "parquet") == "parquet"
    with pytest.raises(InvalidDataset, match="cannot tell"):
        format_of("x.xlsx")
    with pytest.raises(InvalidDataset, match="unknown format"):
        format_of("x.csv", "excel")
