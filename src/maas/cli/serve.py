"""``maas serve``: settings → app → uvicorn, on a socket bound here.

Binding the socket before uvicorn starts lets ``--port 0`` pick a free port and print
it (tests read it back) with no bind-close-rebind race.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from maas.cli.output import console, err_console

if TYPE_CHECKING:
    from maas.auth.bootstrap import AdminKeyNotice

__all__ = ["loads_worker_models_at_start", "serve_app", "serve_command"]


def serve_command(
    host: Annotated[str | None, typer.Option(help="Address to bind [127.0.0.1].")] = None,
    port: Annotated[int | None, typer.Option(help="Port to bind, 0 for any free [8000].")] = None,
    home: Annotated[
        Path | None, typer.Option(help="Directory of the database and artifacts [~/.maas].")
    ] = None,
    demo: Annotated[bool, typer.Option("--demo", help="Register the demo models.")] = False,
    trust_pickle: Annotated[
        bool,
        typer.Option("--trust-pickle", help="Accept pickle/joblib models (they can run code)."),
    ] = False,
    max_loaded_models: Annotated[
        int | None, typer.Option(help="Loaded versions kept before LRU unloading.")
    ] = None,
    log_level: Annotated[str | None, typer.Option(help="Log level [info].")] = None,
    no_auth: Annotated[
        bool, typer.Option("--no-auth", help="No API keys: everyone is admin (local tests only).")
    ] = False,
    ssl_certfile: Annotated[
        Path | None, typer.Option(help="TLS certificate (PEM): serve https.")
    ] = None,
    ssl_keyfile: Annotated[Path | None, typer.Option(help="TLS private key (PEM).")] = None,
    grpc_port: Annotated[
        int | None, typer.Option(help="Also serve KServe V2 gRPC on this port (0: any free).")
    ] = None,
    ray: Annotated[
        str | None,
        typer.Option(
            "--ray",
            metavar="ADDRESS",
            help="Run models (not language models) as actors on this Ray cluster.",
        ),
    ] = None,
) -> None:
    from maas.config import Settings

    settings = Settings()
    serving: dict[str, Any] = {}
    if trust_pickle:
        serving["trust_pickle"] = True
    if max_loaded_models is not None:
        serving["max_loaded_models"] = max_loaded_models
    overrides: dict[str, Any] = {
        key: value
        for key, value in {"host": host, "port": port, "home": home, "log_level": log_level}.items()
        if value is not None
    }
    if demo:
        overrides["demo"] = True
    if serving:
        overrides["serving"] = settings.serving.model_copy(update=serving)
    if no_auth:
        overrides["auth"] = settings.auth.model_copy(update={"enabled": False})
    server_updates: dict[str, Any] = {
        key: value
        for key, value in {
            "ssl_certfile": ssl_certfile, "ssl_keyfile": ssl_keyfile, "grpc_port": grpc_port
        }.items()
        if value is not None
    }  # fmt: skip
    if server_updates:
        overrides["server"] = settings.server.model_copy(update=server_updates)
    if ray is not None:
        overrides["cluster"] = settings.cluster.model_copy(update={"ray_address": ray})
    settings = Settings.model_validate({**settings.model_dump(), **overrides})
    _run(settings)


#: ``maas serve`` alone (``maas.cli.main``): the same command, settings and help as in
#: the whole command tree, whose options it shares.
serve_app = typer.Typer(
    name="maas serve",
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
serve_app.command(help="Run the server.")(serve_command)


def _run(settings: Any) -> None:
    # A model is only ever loaded from the registry's artifacts: never let a library
    # reach for a model hub (there may be no network, and a caller must not steer it).
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    metrics_dir = settings.prometheus_multiproc_dir
    if metrics_dir is not None:
        # Before prometheus_client is first imported (it reads this then) and before any
        # metric has a value: what a killed predecessor left must not be summed in.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
        from maas.observability.multiproc import reset_multiprocess_dir

        reset_multiprocess_dir(metrics_dir)
    if loads_worker_models_at_start(settings):
        # The worker's interpreter and scikit-learn start on the other core while this
        # process imports the server and opens the registry.
        from maas.serving.process_workers import prestart_worker

        prestart_worker()
    import uvicorn

    from maas.api.app import create_app, freeze_startup_objects
    from maas.api.gateway import Gateway
    from maas.api.protocol import limited_http_protocol
    from maas.cli.drain import DrainingServer
    from maas.services import Services, open_services
    from maas.services.demo import demo_banner

    logging.basicConfig(
        level=settings.log_level.upper(), format="%(levelname)s %(name)s: %(message)s"
    )
    sock = _bind(settings.host, settings.port)
    bound_port = sock.getsockname()[1]
    tls = settings.server.ssl_certfile is not None
    url = f"{'https' if tls else 'http'}://{settings.host}:{bound_port}"
    if not settings.auth.enabled:
        console.print(
            "[bold red]WARNING: --no-auth: every caller is admin, with no key. "
            "Never expose this server beyond this machine.[/]"
        )
    if settings.serving.trust_pickle:
        console.print("[bold yellow]--trust-pickle is on: pickle models can run code[/]")

    started: list[Services] = []

    def on_started(services: Services) -> None:
        started.append(services)
        if server.drain_deadline is not None:  # SIGTERM came while the models loaded
            services.begin_drain(server.drain_deadline)
        _announce_admin_key(services.admin_key)
        if settings.demo:
            console.print(demo_banner(url, services.admin_key), soft_wrap=True)
        console.print(
            f"web console: {url}/console (log in with an API key) · API docs: {url}/docs",
            highlight=False,
            soft_wrap=True,
        )
        console.print(f"maas listening on {url}", highlight=False, soft_wrap=True)

    def on_drain(deadline: float) -> None:
        for services in started:
            services.begin_drain(deadline)

    def on_exit() -> None:
        if metrics_dir is not None:
            from maas.observability.multiproc import mark_process_dead

            mark_process_dead(metrics_dir, os.getpid())

    @asynccontextmanager
    async def open_app() -> AsyncIterator[Gateway]:
        async with AsyncExitStack() as stack:
            services = await stack.enter_async_context(open_services(settings))
            grpc_port = settings.server.grpc_port
            if grpc_port is not None:
                from maas.api.v2grpc import serving_grpc

                bound = await stack.enter_async_context(
                    serving_grpc(services, settings.host, grpc_port)
                )
                console.print(
                    f"maas gRPC listening on {settings.host}:{bound}",
                    highlight=False,
                    soft_wrap=True,
                )
            on_started(services)
            app = create_app(services)
            freeze_startup_objects()
            yield app

    config = uvicorn.Config(
        _opened_by_the_server,
        loop="uvloop",
        http=limited_http_protocol(settings.limits.max_header_bytes),
        log_level=settings.log_level,
        access_log=False,
        server_header=False,  # no "server: uvicorn" on every answer: one header less
        ssl_certfile=settings.server.ssl_certfile,
        ssl_keyfile=settings.server.ssl_keyfile,
    )
    server = DrainingServer(
        config, settings.serving, open_app=open_app, on_drain=on_drain, on_exit=on_exit
    )
    try:
        server.run(sockets=[sock])
    finally:  # a startup failure ends here; a drain ends in on_exit (SIGTERM is re-raised)
        on_exit()
        from maas.serving.process_workers import discard_spare_worker

        discard_spare_worker()


def loads_worker_models_at_start(settings: Any) -> bool:
    """Whether the models loaded at start include one that runs in a worker process
    (a runtime that holds the GIL: scikit-learn), as far as can be told this early."""
    serving = settings.serving
    if (
        not serving.load_at_start
        or serving.worker_mode not in ("auto", "processes", "shared")
        or settings.cluster.ray_address is not None
    ):
        return False
    from maas.registry.probe import aliased_frameworks
    from maas.runtimes.catalog import describe

    found = aliased_frameworks(settings.resolved_database_url)
    if found is None:  # another database: a restart of a server that has models
        return True
    runtimes = [describe(framework) for framework in found]
    return any(r is not None and not (r.releases_gil or r.in_process_only) for r in runtimes)


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket, or one line saying why not: a taken port is the commonest
    first-run failure, and a traceback hides the fix."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            reason = "is in use by another process; stop it or pick another port with --port"
        elif exc.errno == errno.EACCES:
            reason = "needs privileges to bind; pick a port above 1023 with --port"
        else:
            reason = f"cannot be bound ({exc.strerror}); check --host and --port"
        err_console.print(f"error: {host}:{port} {reason}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    return sock


async def _opened_by_the_server(scope: Any, receive: Any, send: Any) -> None:
    """uvicorn's config wants an app before the services exist: ``DrainingServer``
    replaces this one with the real app once they are open."""
    raise RuntimeError("the app is built once the services are open")


def _announce_admin_key(notice: AdminKeyNotice | None) -> None:
    """Show a just-minted admin key once; later starts say where it is kept."""
    if notice is None or notice.from_settings:
        return
    if notice.created_key is not None:
        console.print(
            f"[bold]admin API key created[/] (shown once, also in {notice.path}, mode 0600):\n"
            f"  {notice.created_key}",
            highlight=False,
            soft_wrap=True,
        )
    elif notice.path is not None:
        console.print(f"admin API key: {notice.path}", highlight=False, soft_wrap=True)
