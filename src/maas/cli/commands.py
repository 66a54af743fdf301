"""Root of the ``maas`` command and its global options: every command (``maas.cli.main``
runs ``maas serve`` without loading the others)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from maas import __version__
from maas.cli.cluster import cluster_app
from maas.cli.datasets import datasets_app
from maas.cli.gc import gc_command
from maas.cli.jobs import jobs_app
from maas.cli.keys import audit_command, keys_app
from maas.cli.models import models_app, predict_command
from maas.cli.remote import Remote
from maas.cli.serve import serve_command
from maas.cli.usage import usage_command

__all__ = ["app"]

app = typer.Typer(
    name="maas",
    help="Self-hosted Model-as-a-Service: serve, manage and call models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # Plain click help: rich markup would eat "[info]"-like defaults in help texts, and
    # typer's rich panels label every flag "<bool>".
    rich_markup_mode=None,
)


def _print_version(wanted: bool) -> None:
    if wanted:
        print(f"maas {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    url: Annotated[str | None, typer.Option("--url", envvar="MAAS_URL", help="Server URL.")] = None,
    api_key: Annotated[
        str | None, typer.Option("--api-key", envvar="MAAS_API_KEY", help="API key to send.")
    ] = None,
    output: Annotated[str, typer.Option("--output", "-o", help="table or json.")] = "table",
    cacert: Annotated[
        Path | None,
        typer.Option(
            "--cacert",
            envvar="MAAS_CACERT",
            exists=True,
            dir_okay=False,
            help="CA certificate (PEM) to trust: a self-signed server's own certificate.",
        ),
    ] = None,
    insecure: Annotated[
        bool,
        typer.Option(
            "--insecure",
            envvar="MAAS_INSECURE",
            help="Do not verify the server's TLS certificate (tests only).",
        ),
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", is_eager=True, callback=_print_version, help="Print the version."
        ),
    ] = False,
) -> None:
    verify: bool | str = False if insecure else str(cacert) if cacert else True
    ctx.obj = Remote(url=url, api_key=api_key, output=output, verify=verify)


app.command("serve", help="Run the server.")(serve_command)
app.add_typer(models_app, name="models", help="Push, list, alias and delete models.")
app.command("predict", help="Call a model: maas predict NAME[:VERSION|:ALIAS] --data JSON.")(
    predict_command
)
app.command("usage", help="Usage totals per key, model and day (--csv to export).")(usage_command)

app.add_typer(datasets_app, name="datasets", help="Push, list and show datasets for jobs.")
app.add_typer(
    jobs_app, name="jobs", help="Submit, follow and cancel training and optimization jobs."
)
app.add_typer(keys_app, name="keys", help="Create, list, revoke and rotate API keys (admin).")
app.command("audit", help="Show the audit log (admin).")(audit_command)
app.add_typer(cluster_app, name="cluster", help="Where models run: nodes and replicas (admin).")
app.command("gc", help="Delete artifacts nothing references (admin); --dry-run lists them first.")(
    gc_command
)
