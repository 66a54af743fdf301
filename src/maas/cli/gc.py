"""``maas gc``: delete the artifacts nothing references, on the server or (``--local``)
right here against the database and store of ``MAAS_HOME``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from maas.cli.durations import parse_duration
from maas.cli.output import console, print_json, print_table
from maas.cli.remote import http_for, remote_of, reports_errors
from maas.client._core import raise_for_error
from maas.protocols.gc import GcReport

__all__ = ["gc_command"]

#: A pass over a large remote store can take minutes; the server's request deadline
#: (``limits.request_deadline_s``) bounds it, not the CLI's usual 60 s.
_PASS_TIMEOUT = httpx.Timeout(60.0, read=None)


@reports_errors
def gc_command(
    ctx: typer.Context,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List what would be deleted; delete nothing.")
    ] = False,
    grace: Annotated[
        str | None,
        typer.Option(
            help="Keep unreferenced blobs changed more recently than this (90s, 30m, 1h, 2d): "
            "a push may be inspecting them [the server's MAAS_STORAGE__GC_GRACE_S, 1h]."
        ),
    ] = None,
    local: Annotated[
        bool,
        typer.Option(
            "--local",
            help="Run in this process against the database and store of MAAS_HOME (or "
            "--home) instead of asking the server at --url; for a stopped server or cron.",
        ),
    ] = False,
    home: Annotated[
        Path | None, typer.Option(help="With --local: the server's home directory [~/.maas].")
    ] = None,
) -> None:
    """Delete artifacts no model version, dataset or job references, and the cached
    directories unpacked or converted from them."""
    grace_s = None if grace is None else parse_duration(grace, "--grace").total_seconds()
    if local:
        report = _collect_here(dry_run, grace_s, home)
    else:
        report = _collect_on_server(ctx, dry_run, grace_s)
    if remote_of(ctx).wants_json:
        print_json(report)
        return
    _show(report)


def _collect_on_server(ctx: typer.Context, dry_run: bool, grace_s: float | None) -> GcReport:
    body: dict[str, Any] = {"dry_run": dry_run, "grace_s": grace_s}
    with http_for(ctx) as http:
        response = http.post("/api/v1/admin/gc", json=body, timeout=_PASS_TIMEOUT)
    raise_for_error(response)
    return GcReport.model_validate(response.json())


def _collect_here(dry_run: bool, grace_s: float | None, home: Path | None) -> GcReport:
    from maas.config import Settings
    from maas.services import open_collector

    settings = Settings()
    if home is not None:
        settings = Settings.model_validate({**settings.model_dump(), "home": home})
    with open_collector(settings) as collector:
        return collector.collect(dry_run=dry_run, grace_s=grace_s)


def _show(report: GcReport) -> None:
    outcome = "would delete" if report.dry_run else "deleted"
    rows: list[tuple[Any, ...]] = [
        (b.store, b.digest[:19], b.size_bytes, _age(b.age_s), outcome) for b in report.collected
    ]
    rows += [("cache", _short(c.path), c.size_bytes, "", outcome) for c in report.caches]
    rows += [(b.store, b.digest[:19], "", "", f"skipped: {b.reason}") for b in report.skipped]
    if rows:
        print_table("garbage collection", ("store", "artifact", "bytes", "age", "outcome"), rows)
    verb = "would free" if report.dry_run else "freed"
    console.print(
        f"{verb} {report.freed_bytes} bytes: {len(report.collected)} unreferenced blobs, "
        f"{len(report.caches)} cache directories; kept {report.referenced} referenced and "
        f"{report.young} unreferenced younger than {report.grace_s:g} s, of {report.scanned} "
        f"blobs",
        highlight=False,
        soft_wrap=True,
    )


def _age(seconds: float) -> str:
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86_400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86_400:.0f} d"


def _short(path: str) -> str:
    """``unpacked/<64 hex>`` as ``unpacked/<12 hex>``, like the short digests beside it."""
    kind, _, name = path.partition("/")
    return f"{kind}/{name[:12]}"
