"""How remote commands reach the server: global options → an SDK ``Client``.

The key is ``--api-key``, else ``MAAS_API_KEY``, else the admin key that ``maas serve``
wrote on this machine (``$MAAS_HOME/admin.key``, then ``~/.maas/admin.key``), so the
CLI next to a fresh server works with no setup.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

import httpx
import typer

from maas.cli.output import err_console
from maas.client import Client
from maas.client._shared import base_url, client_headers, resolve_api_key
from maas.errors import MaasError

__all__ = ["Remote", "client_for", "http_for", "reports_errors"]

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True)
class Remote:
    url: str | None
    api_key: str | None
    output: str
    #: httpx's ``verify``: ``True``, a CA bundle (``--cacert``) or ``False`` (``--insecure``).
    verify: bool | str = True

    def __post_init__(self) -> None:
        if self.api_key is None:
            object.__setattr__(self, "api_key", resolve_api_key(None))

    @property
    def wants_json(self) -> bool:
        return self.output == "json"


def remote_of(ctx: typer.Context) -> Remote:
    remote = ctx.find_root().obj
    assert isinstance(remote, Remote)
    return remote


def client_for(ctx: typer.Context) -> Client:
    remote = remote_of(ctx)
    return Client(remote.url, api_key=remote.api_key, verify=remote.verify)


def http_for(ctx: typer.Context) -> httpx.Client:
    """A plain HTTP client with the same URL and key, for endpoints the SDK lacks."""
    remote = remote_of(ctx)
    return httpx.Client(
        base_url=base_url(remote.url),
        headers=client_headers(remote.api_key),
        timeout=60,
        verify=remote.verify,
    )


def reports_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn server errors and connection failures into one red line and exit code 1."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except MaasError as exc:
            err_console.print(f"[red]error[/red] ({exc.code}): {exc.message}")
            raise typer.Exit(1) from None
        except httpx.TransportError as exc:
            hint = ""
            if "CERTIFICATE_VERIFY_FAILED" in str(exc):
                hint = (
                    " (to trust a self-signed server pass its certificate with --cacert FILE"
                    " or MAAS_CACERT; --insecure skips the check)"
                )
            err_console.print(
                f"[red]error[/red]: cannot reach the server: {exc}{hint}", highlight=False
            )
            raise typer.Exit(1) from None

    return wrapper
