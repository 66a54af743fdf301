"""``maas datasets push|list|show``: tables for training and evaluation jobs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from maas.cli.output import console, print_json, print_table
from maas.cli.remote import client_for, remote_of, reports_errors

__all__ = ["datasets_app"]

datasets_app = typer.Typer(no_args_is_help=True)


@datasets_app.command("push")
@reports_errors
def push(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="CSV, Parquet, JSONL.")],
    name: Annotated[str, typer.Option("--name", "-n", help="Dataset name.")],
    fmt: Annotated[
        str | None, typer.Option("--format", help="csv, parquet or jsonl [from the extension].")
    ] = None,
) -> None:
    """Upload a table; the server checks it and records its schema and row count."""
    with client_for(ctx) as client:
        info = client.push_dataset(file, name, fmt=fmt)
    if remote_of(ctx).wants_json:
        print_json(info)
        return
    console.print(
        f"pushed dataset [bold]{info.name}[/bold] {info.format} {info.rows} rows, "
        f"{len(info.columns)} columns, {info.digest[:19]}…"
    )


@datasets_app.command("list")
@reports_errors
def list_datasets(ctx: typer.Context) -> None:
    """List dataset uploads, newest first."""
    with client_for(ctx) as client:
        found = client.list_datasets()
    if remote_of(ctx).wants_json:
        print_json(found)
        return
    rows = [
        (d.name, d.format, d.rows, len(d.columns), d.size_bytes, d.digest[:19], d.created_at)
        for d in found
    ]
    print_table(
        "datasets", ("name", "format", "rows", "columns", "bytes", "digest", "created"), rows
    )


@datasets_app.command("show")
@reports_errors
def show(
    ctx: typer.Context, ref: Annotated[str, typer.Argument(help="NAME or NAME@sha256:…")]
) -> None:
    """Show a dataset with its columns."""
    with client_for(ctx) as client:
        info = client.get_dataset(ref)
    if remote_of(ctx).wants_json:
        print_json(info)
        return
    console.print(f"[bold]{info.name}[/bold] {info.format}, {info.rows} rows, {info.digest}")
    print_table("columns", ("name", "type"), [(c.name, c.type) for c in info.columns])
