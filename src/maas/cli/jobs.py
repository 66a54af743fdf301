"""``maas jobs submit|list|show|logs|cancel``: jobs on the server.

``--follow`` reads the job's event stream (SSE) and draws a rich progress bar from the
``fraction`` and ``message`` that jobs report, with log lines printed above it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from maas.cli.output import console, err_console, print_json, print_table
from maas.cli.remote import client_for, remote_of, reports_errors
from maas.client import Client
from maas.protocols.jobs import JobEvent, JobInfo

__all__ = ["jobs_app"]

jobs_app = typer.Typer(no_args_is_help=True)


def _summary(job: JobInfo) -> str:
    if job.state == "succeeded":
        versions = job.result.get("versions") or []
        made = ", ".join(f"{job.model}:{v}" for v in versions) or "no new version"
        return f"job {job.id} succeeded: {made}"
    if job.state == "failed":
        return f"job {job.id} failed ({job.error_code}): {job.error}"
    return f"job {job.id} {job.state}"


def _follow(client: Client, job: JobInfo) -> JobInfo:
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        TextColumn("{task.fields[message]}"),
    )
    final = job
    with Progress(*columns, console=err_console, transient=False) as progress:
        bar = progress.add_task(f"{job.kind} {job.id[:8]}", total=1.0, message=job.state)
        for item in client.follow_job(job.id):
            if isinstance(item, JobInfo):
                final = item
                if item.state == "succeeded":
                    progress.update(bar, completed=1.0)
                break
            _show_event(progress, bar, item)
    return final


def _show_event(progress: Progress, bar: Any, event: JobEvent) -> None:
    data = event.data
    if event.type == "log":
        progress.console.print(str(data.get("line", "")), highlight=False, markup=False)
    elif event.type == "progress":
        update: dict[str, Any] = {}
        if isinstance(data.get("fraction"), int | float):
            update["completed"] = float(data["fraction"])
        if data.get("message"):
            update["message"] = str(data["message"])[:80]
        progress.update(bar, **update)
    elif event.type == "state":
        reason = f" ({data['reason']})" if data.get("reason") else ""
        progress.console.print(f"state: {data.get('state')}{reason}", highlight=False)
        progress.update(bar, message=str(data.get("state")))


@jobs_app.command("submit")
@reports_errors
def submit(
    ctx: typer.Context,
    spec: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="Spec (YAML/JSON).")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Follow it to the end.")] = False,
) -> None:
    """Submit a job spec (train, finetune, optimize, evaluate)."""
    with client_for(ctx) as client:
        job = client.submit_job(spec.read_text())
        if not follow:
            if remote_of(ctx).wants_json:
                print_json(job)
            else:
                console.print(f"queued job [bold]{job.id}[/bold] ({job.kind} {job.model})")
            return
        final = _follow(client, job)
    _finish(ctx, final)


def _finish(ctx: typer.Context, job: JobInfo) -> None:
    if remote_of(ctx).wants_json:
        print_json(job)
    else:
        console.print(_summary(job), highlight=False)
    if job.state != "succeeded":
        raise typer.Exit(1)


@jobs_app.command("list")
@reports_errors
def list_jobs(
    ctx: typer.Context,
    state: Annotated[str | None, typer.Option(help="queued, running, succeeded, …")] = None,
    model: Annotated[str | None, typer.Option(help="Only this model's jobs.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many.")] = 50,
) -> None:
    """List jobs, newest first."""
    with client_for(ctx) as client:
        found = client.list_jobs(state=state, model=model, limit=limit)
    if remote_of(ctx).wants_json:
        print_json(found)
        return
    rows = [
        (
            j.id,
            j.kind,
            j.model,
            j.state,
            f"{float(j.progress.get('fraction', 0)) * 100:.0f}%" if j.progress else "",
            ", ".join(str(v) for v in j.result.get("versions", [])),
            j.created_at,
        )
        for j in found
    ]
    print_table("jobs", ("id", "kind", "model", "state", "progress", "versions", "created"), rows)


@jobs_app.command("show")
@reports_errors
def show(ctx: typer.Context, job_id: str) -> None:
    """Show a job: spec, progress, result (metrics, report)."""
    with client_for(ctx) as client:
        print_json(client.get_job(job_id))


@jobs_app.command("logs")
@reports_errors
def logs(
    ctx: typer.Context,
    job_id: str,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Follow until it ends.")] = False,
) -> None:
    """Print a job's log; with --follow, stream it with a progress bar."""
    with client_for(ctx) as client:
        if follow:
            _finish(ctx, _follow(client, client.get_job(job_id)))
            return
        events = client.job_logs(job_id)
    if remote_of(ctx).wants_json:
        print_json(events)
        return
    for event in events:
        if event.type == "log":
            console.print(str(event.data.get("line", "")), highlight=False, markup=False)
        elif event.type == "state":
            reason = f" ({event.data['reason']})" if event.data.get("reason") else ""
            console.print(
                f"[dim]{event.at:%H:%M:%S}[/dim] state: {event.data.get('state')}{reason}"
            )


@jobs_app.command("cancel")
@reports_errors
def cancel(ctx: typer.Context, job_id: str) -> None:
    """Cancel a job; a running job's process is stopped."""
    with client_for(ctx) as client:
        job = client.cancel_job(job_id)
    console.print(f"job {job.id} {job.state}")
