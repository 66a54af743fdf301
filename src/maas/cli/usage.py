"""``maas usage``: usage totals from ``GET /api/v1/usage`` as a table, JSON or CSV."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import httpx
import typer

from maas.cli.output import print_json, print_table
from maas.cli.remote import http_for, remote_of, reports_errors
from maas.client._core import raise_for_error

__all__ = ["usage_command"]

_TOTALS = (  # field of the response, column heading
    ("requests", "requests"),
    ("errors", "errors"),
    ("rows", "rows"),
    ("prompt_tokens", "prompt tok"),
    ("completion_tokens", "compl. tok"),
    ("compute_s", "compute s"),
    ("audio_s", "audio s"),
    ("characters", "chars"),
    ("mean_latency_ms", "mean ms"),
)


@reports_errors
def usage_command(
    ctx: typer.Context,
    group_by: Annotated[
        str, typer.Option("--group-by", "-g", help="Comma-separated: key, model, day.")
    ] = "key,model",
    since: Annotated[str | None, typer.Option(help="From this time (ISO 8601, UTC).")] = None,
    until: Annotated[str | None, typer.Option(help="Before this time (ISO 8601, UTC).")] = None,
    key: Annotated[str | None, typer.Option(help="Only this key (admins).")] = None,
    as_csv: Annotated[bool, typer.Option("--csv", help="Print CSV, for export.")] = False,
) -> None:
    """Show requests, errors, rows, tokens and compute time per key, model and day."""
    given = {"group_by": group_by, "since": since, "until": until, "key": key}
    params = {name: value for name, value in given.items() if value is not None}
    if as_csv:
        params["format"] = "csv"
    response = _get(ctx, params)
    if as_csv:
        sys.stdout.write(response.text)
        return
    body: dict[str, Any] = response.json()
    if remote_of(ctx).wants_json:
        print_json(body)
        return
    groups: list[str] = body["group_by"]
    columns = [*groups, *(field for field, _ in _TOTALS)]
    rows = [[_cell(column, row[column]) for column in columns] for row in body["rows"]]
    print_table("usage", [*groups, *(label for _, label in _TOTALS)], rows)


def _cell(column: str, value: Any) -> Any:
    if column == "key" and value is None:
        return "(no key)"
    return f"{value:.3f}" if isinstance(value, float) else value


def _get(ctx: typer.Context, params: dict[str, str]) -> httpx.Response:
    with http_for(ctx) as http:
        response = http.get("/api/v1/usage", params=params)
    raise_for_error(response)
    return response
