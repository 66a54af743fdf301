"""Rendering for the CLI: rich tables for people, JSON for scripts (``--output json``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

__all__ = ["console", "err_console", "print_json", "print_table"]

console = Console()
err_console = Console(stderr=True)


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def print_json(value: Any) -> None:
    data = orjson.dumps(_plain(value), option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)
    console.print_json(data.decode())


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*("" if cell is None else str(cell) for cell in row))
    console.print(table)
