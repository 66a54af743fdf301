"""Dataset columns as numpy arrays, for the job kinds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from maas.errors import InvalidDataset
from maas.jobs.tabular import read_table

__all__ = ["Frame", "load_frame", "normalise_labels"]


class Frame:
    """A read dataset: named columns, materialised on demand."""

    def __init__(self, table: Any, info: dict[str, Any], max_rows: int | None = None) -> None:
        if max_rows is not None and table.num_rows > max_rows:
            table = table.slice(0, max_rows)
        self._table = table
        self.info = info
        self.rows = int(table.num_rows)

    @property
    def ref(self) -> dict[str, Any]:
        return {"name": self.info["name"], "digest": self.info["digest"], "rows": self.rows}

    def column(self, name: str) -> np.ndarray:
        return np.asarray(self._table.column(name).to_numpy(zero_copy_only=False))

    def texts(self, name: str) -> list[str]:
        return [
            "" if value is None else str(value) for value in self._table.column(name).to_pylist()
        ]

    def target(self, name: str) -> np.ndarray:
        column = self._table.column(name)
        if column.null_count:
            raise InvalidDataset(f"the target column {name!r} has {column.null_count} empty values")
        return self.column(name)

    def features(self, names: list[str]) -> np.ndarray:
        matrix = np.column_stack([self.column(n).astype(np.float64) for n in names])
        if np.isnan(matrix).any():
            bad = [n for i, n in enumerate(names) if np.isnan(matrix[:, i]).any()]
            raise InvalidDataset(f"feature columns have empty values: {', '.join(bad[:10])}")
        return matrix


def load_frame(dataset: dict[str, Any], max_rows: int | None = None) -> Frame:
    return Frame(read_table(Path(dataset["path"]), dataset["format"]), dataset, max_rows)


def normalise_labels(values: Any) -> np.ndarray:
    """Labels of any source (ints, floats, bytes, str) as comparable strings."""
    array = np.asarray(values).ravel()
    if array.dtype.kind in "iub":
        return array.astype(np.int64).astype(str)
    if array.dtype.kind == "f" and np.all(np.mod(array, 1) == 0):
        return array.astype(np.int64).astype(str)
    return np.array([v.decode() if isinstance(v, bytes) else str(v) for v in array])
