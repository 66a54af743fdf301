"""Reading dataset files (CSV, Parquet, JSONL) with pyarrow: one reader for the server,
which checks uploads, and the job processes, which train on them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from maas.errors import InvalidDataset, MissingExtra

__all__ = ["FORMATS", "format_of", "inspect_table", "read_table"]

FORMATS = ("csv", "parquet", "jsonl")
_SUFFIXES = {
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}


def format_of(filename: str, declared: str | None = None) -> str:
    """The dataset format, from ``declared`` or else the file name's extension."""
    if declared is not None:
        if declared not in FORMATS:
            raise InvalidDataset(f"unknown format {declared!r}; use one of {', '.join(FORMATS)}")
        return declared
    suffix = Path(filename).suffix.lower()
    if suffix not in _SUFFIXES:
        raise InvalidDataset(
            f"cannot tell the format of {filename!r}: name it .csv, .parquet or .jsonl, "
            "or pass format"
        )
    return _SUFFIXES[suffix]


def _pyarrow() -> Any:
    try:
        import pyarrow
    except ImportError:
        raise MissingExtra("datasets", "jobs") from None
    return pyarrow


def read_table(path: Path, fmt: str) -> Any:
    """The whole file as a ``pyarrow.Table``; unreadable files raise ``InvalidDataset``."""
    pa = _pyarrow()
    try:
        if fmt == "csv":
            import pyarrow.csv

            return pyarrow.csv.read_csv(path)
        if fmt == "parquet":
            import pyarrow.parquet

            return pyarrow.parquet.read_table(path)
        import pyarrow.json

        return pyarrow.json.read_json(path)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as exc:
        message = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        raise InvalidDataset(f"not a readable {fmt.upper()} file: {message}") from None


def inspect_table(path: Path, fmt: str) -> tuple[int, list[dict[str, str]]]:
    """Row count and columns (name, arrow type) of a dataset file, refusing empty ones."""
    table = read_table(path, fmt)
    if table.num_columns == 0 or table.num_rows == 0:
        raise InvalidDataset(f"the {fmt.upper()} file has no rows")
    names = [str(name) for name in table.column_names]
    if len(set(names)) != len(names):
        raise InvalidDataset("column names must be unique")
    columns = [{"name": field.name, "type": str(field.type)} for field in table.schema]
    return int(table.num_rows), columns
