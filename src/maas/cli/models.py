"""``maas models …`` and ``maas predict``: remote commands over the SDK."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import numpy as np
import orjson
import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

from maas.cli.output import console, err_console, print_json, print_table
from maas.cli.remote import client_for, remote_of, reports_errors
from maas.client._core import split_ref
from maas.protocols.management import DeploymentSpec

__all__ = ["models_app", "predict_command"]

models_app = typer.Typer(no_args_is_help=True)

_PROGRESS_FROM_BYTES = 8 * 1024 * 1024


@models_app.command("push")
@reports_errors
def push(
    ctx: typer.Context,
    file: Annotated[
        Path,
        typer.Argument(
            exists=True, help="Model file, or a transformers model directory (sent as a tar)."
        ),
    ],
    name: Annotated[str, typer.Option("--name", "-n", help="Model name.")],
    alias: Annotated[str | None, typer.Option(help="Point this alias at the new version.")] = None,
    description: Annotated[str | None, typer.Option(help="Description of a new model.")] = None,
    metadata: Annotated[str | None, typer.Option(help="Free metadata as a JSON object.")] = None,
) -> None:
    """Upload a model file as a new immutable version and print it."""
    meta = orjson.loads(metadata) if metadata else None
    files = sorted(file.rglob("*")) if file.is_dir() else [file]
    size = sum(path.stat().st_size for path in files if path.is_file())
    with client_for(ctx) as client:
        if size < _PROGRESS_FROM_BYTES:
            info = client.push(file, name, alias=alias, description=description, metadata=meta)
        else:
            columns = (BarColumn(), DownloadColumn(), TransferSpeedColumn())
            with Progress(*columns, console=err_console) as progress:
                task = progress.add_task("upload", total=size)
                info = client.push(
                    file,
                    name,
                    alias=alias,
                    description=description,
                    metadata=meta,
                    progress=lambda sent: progress.update(task, completed=sent),
                )
    if remote_of(ctx).wants_json:
        print_json(info)
        return
    aliases = f" ({', '.join(info.aliases)})" if info.aliases else ""
    console.print(
        f"pushed [bold]{info.model}:{info.version}[/bold]{aliases} "
        f"{info.framework} {info.digest[:19]}… {info.size_bytes} bytes"
    )


@models_app.command("list")
@reports_errors
def list_models(ctx: typer.Context) -> None:
    """List models with their latest version and aliases."""
    with client_for(ctx) as client:
        models = client.list_models()
    if remote_of(ctx).wants_json:
        print_json(models)
        return
    rows = [(m.name, m.task, m.latest_version, _aliases(m.aliases), m.description) for m in models]
    print_table("models", ("name", "task", "latest", "aliases", "description"), rows)


def _aliases(aliases: dict[str, int]) -> str:
    return ", ".join(f"{alias}→{version}" for alias, version in sorted(aliases.items()))


@models_app.command("show")
@reports_errors
def show(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="NAME, or NAME:VERSION / NAME:ALIAS.")],
) -> None:
    """Show a model, or one version with its signature."""
    name, selector = split_ref(ref)
    with client_for(ctx) as client:
        info: Any = client.get_version(name, selector) if selector else client.get_model(name)
    print_json(info)


@models_app.command("versions")
@reports_errors
def versions(ctx: typer.Context, name: str) -> None:
    """List the versions of a model."""
    with client_for(ctx) as client:
        found = client.list_versions(name)
    if remote_of(ctx).wants_json:
        print_json(found)
        return
    rows = [
        (v.version, v.framework, ", ".join(v.aliases), v.digest[:19], v.size_bytes, v.created_at)
        for v in found
    ]
    print_table(name, ("version", "framework", "aliases", "digest", "bytes", "created"), rows)


@models_app.command("alias")
@reports_errors
def alias(
    ctx: typer.Context,
    name: str,
    alias: str,
    version: int,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Promote even if its quality drop is over the limit or its signature differs.",
        ),
    ] = False,
) -> None:
    """Point ALIAS of model NAME at VERSION (moving it if it exists)."""
    with client_for(ctx) as client:
        info = client.set_alias(name, alias, version, force=force)
    console.print(f"{info.model}:{info.alias} → {info.version}")


@models_app.command("compare")
@reports_errors
def compare(ctx: typer.Context, name: str, first: int, second: int) -> None:
    """Show two versions side by side: metrics, evaluations and optimization reports."""
    with client_for(ctx) as client:
        a, b = client.get_version(name, first), client.get_version(name, second)
    # A version made from the other carries the other's measurements too (the
    # "before" side of its optimization report): fill in what the source lacks.
    rows_a = {**source_facts(b, a), **version_facts(a)}
    rows_b = {**source_facts(a, b), **version_facts(b)}
    if remote_of(ctx).wants_json:
        print_json({"model": name, str(first): rows_a, str(second): rows_b})
        return
    keys = list(dict.fromkeys([*rows_a, *rows_b]))
    rows = [
        (key, rows_a.get(key), rows_b.get(key), _delta(rows_a.get(key), rows_b.get(key)))
        for key in keys
    ]
    print_table(f"{name}: {first} vs {second}", ("", str(first), str(second), "change"), rows)


def version_facts(version: Any) -> dict[str, Any]:
    """A version as flat, comparable rows: what it is, its metrics, its report."""
    facts: dict[str, Any] = {
        "framework": version.framework,
        "file": version.filename,
        "size_bytes": version.size_bytes,
    }
    for key, value in sorted(version.metrics.items()):
        if isinstance(value, dict):
            for dataset, metrics in sorted(value.items()):
                for metric, number in sorted((metrics or {}).items()):
                    facts[f"{key}.{dataset}.{metric}"] = _rounded(number)
        else:
            facts[key] = _rounded(value)
    report = version.metadata.get("optimization")
    if isinstance(report, dict):
        facts["optimization"] = report.get("method")
        facts["quality_drop"] = _rounded(report.get("quality_drop"))
        facts.update(_measured(report, "after"))
    parent = (version.lineage or {}).get("parent")
    if parent:
        facts["parent"] = f"{parent.get('model')}:{parent.get('version')}"
    return facts


def source_facts(derived: Any, source: Any) -> dict[str, Any]:
    """What ``derived``'s optimization report measured of ``source``, if it was made
    from it: latency, quality and metrics on the same data, same machine."""
    report = derived.metadata.get("optimization")
    if not isinstance(report, dict) or report.get("source") != {
        "model": source.model,
        "version": source.version,
    }:
        return {}
    quality = report.get("quality") or {}
    before = quality.get("metrics_before") or {}
    return {key: _rounded(value) for key, value in before.items()} | _measured(report, "before")


def _measured(report: dict[str, Any], side: str) -> dict[str, Any]:
    """Latency and quality of one side (``before`` or ``after``) of a report."""
    facts: dict[str, Any] = {}
    for batch, sides in (report.get("latency_ms") or {}).items():
        stats = (sides or {}).get(side) or {}
        for stat in ("p50_ms", "p99_ms"):
            if stat in stats:
                facts[f"latency {batch} {stat}"] = _rounded(stats[stat])
    quality = report.get("quality") or {}
    metric = quality.get("metric")
    if metric and side in quality:
        facts[f"quality {metric}"] = _rounded(quality[side])
    elif metric and side == "after" and metric in quality:  # cosine, agreement: after only
        facts[f"quality {metric}"] = _rounded(quality[metric])
    return facts


def _rounded(value: Any) -> Any:
    return round(value, 4) if isinstance(value, float) else value


def _delta(a: Any, b: Any) -> str:
    """``b - a`` as a person reads it: ``-12,454 (-61%)``, ``+0.0123``; never ``1.2e+04``."""
    numbers = (int, float)
    if not (isinstance(a, numbers) and isinstance(b, numbers)) or isinstance(a, bool):
        return ""
    change = b - a
    text = f"{change:+,}" if isinstance(change, int) else f"{change:+,.4f}".rstrip("0")
    text = text.removesuffix(".")
    return f"{text} ({change / a:+.0%})" if a else text


@models_app.command("deploy")
@reports_errors
def deploy(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="NAME:VERSION (a version number).")],
    max_batch_size: Annotated[
        int | None, typer.Option(help="Rows per batch; 1 turns batching off.")
    ] = None,
    max_queue_delay_us: Annotated[
        int | None, typer.Option(help="How long a batch waits for more requests (µs).")
    ] = None,
    preferred_batch_sizes: Annotated[
        str | None, typer.Option(help="Batch sizes dispatched at once, e.g. 8,16.")
    ] = None,
    instances: Annotated[int | None, typer.Option(help="Parallel instances of the model.")] = None,
    max_queue_size: Annotated[int | None, typer.Option(help="Queued requests before 503.")] = None,
    workers: Annotated[
        str | None,
        typer.Option(
            help="auto, threads (in the server process), inline (on its event loop), "
            "processes (its own) or shared (the pool small models share)."
        ),
    ] = None,
    quantize: Annotated[
        str | None,
        typer.Option(help="int8: dynamic int8 linear layers (transformers models); none: off."),
    ] = None,
    cpus: Annotated[
        float | None, typer.Option(help="CPUs each instance asks of a Ray cluster.")
    ] = None,
    memory_bytes: Annotated[
        int | None, typer.Option(help="Memory each instance asks of a Ray cluster.")
    ] = None,
) -> None:
    """Set how a version is served; options not given keep their current value."""
    name, selector = split_ref(ref)
    if selector is None or not selector.isdigit():
        raise typer.BadParameter("give NAME:VERSION with a version number", param_hint="REF")
    changes: dict[str, Any] = {
        key: value
        for key, value in {
            "max_batch_size": max_batch_size,
            "max_queue_delay_us": max_queue_delay_us,
            "instances": instances,
            "max_queue_size": max_queue_size,
            "cpus": cpus,
            "memory_bytes": memory_bytes,
        }.items()
        if value is not None
    }
    if preferred_batch_sizes is not None:
        sizes = [part.strip() for part in preferred_batch_sizes.split(",") if part.strip()]
        if not all(size.isdigit() for size in sizes):
            raise typer.BadParameter(
                "a comma-separated list of integers", param_hint="--preferred-batch-sizes"
            )
        changes["preferred_batch_sizes"] = [int(size) for size in sizes]
    if workers is not None:
        if workers not in ("auto", "threads", "processes", "shared"):
            raise typer.BadParameter("auto, threads, processes or shared", param_hint="--workers")
        changes["workers"] = workers
    if quantize is not None:
        if quantize not in ("int8", "none"):
            raise typer.BadParameter("int8 or none", param_hint="--quantize")
        changes["quantize"] = None if quantize == "none" else quantize
    with client_for(ctx) as client:
        current = client.get_version(name, int(selector)).deployment
        spec = DeploymentSpec.model_validate({**current.model_dump(), **changes})
        info = client.set_deployment(name, int(selector), spec)
    if remote_of(ctx).wants_json:
        print_json(info)
        return
    console.print(f"{info.model}:{info.version} deployment: {info.deployment.model_dump_json()}")


@models_app.command("unalias")
@reports_errors
def unalias(ctx: typer.Context, name: str, alias: str) -> None:
    """Remove an alias."""
    with client_for(ctx) as client:
        client.delete_alias(name, alias)
    console.print(f"removed {name}:{alias}")


@models_app.command("rm")
@reports_errors
def remove(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="NAME (the whole model) or NAME:VERSION.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
) -> None:
    """Delete a version, or a whole model with all its versions."""
    name, selector = split_ref(ref)
    if selector is not None and not selector.isdigit():
        raise typer.BadParameter("give a version number, not an alias", param_hint="REF")
    if selector is None and not yes:
        typer.confirm(f"delete model {name} and all its versions?", abort=True)
    with client_for(ctx) as client:
        if selector is None:
            client.delete_model(name)
        else:
            client.delete_version(name, int(selector))
    console.print(f"deleted {ref}")


@reports_errors
def predict_command(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="NAME, NAME:VERSION or NAME:ALIAS.")],
    data: Annotated[
        str,
        typer.Option(
            "--data", "-d", help='JSON rows such as [[5.1,3.5,1.4,0.2]], or {"input": rows}.'
        ),
    ],
) -> None:
    """Run a model on JSON data and print its outputs."""
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise typer.BadParameter(f"not valid JSON: {exc}", param_hint="--data") from None
    inputs: Any = parsed if isinstance(parsed, dict) else np.asarray(parsed)
    with client_for(ctx) as client:
        outputs = client.predict(ref, inputs)
    print_json({name: value.tolist() for name, value in outputs.items()} | _decoded(outputs))


def _decoded(outputs: dict[str, np.ndarray]) -> dict[str, Any]:
    """BYTES outputs printed as text rather than Python bytes reprs."""
    return {
        name: [v.decode("utf-8", "replace") for v in value.ravel()]
        for name, value in outputs.items()
        if value.dtype == object
    }
