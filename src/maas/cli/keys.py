"""``maas keys`` (create, list, revoke, rotate) and ``maas audit``: admin commands."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import httpx
import typer

from maas.cli.durations import parse_duration
from maas.cli.output import console, print_json, print_table
from maas.cli.remote import http_for, remote_of, reports_errors
from maas.client._core import raise_for_error

__all__ = ["audit_command", "keys_app"]

keys_app = typer.Typer(no_args_is_help=True)

_KEY_COLUMNS = ("id", "prefix", "name", "role", "models", "owner", "expires_at", "revoked_at")


def _call(ctx: typer.Context, method: str, path: str, **kwargs: Any) -> Any:
    with http_for(ctx) as http:
        response: httpx.Response = http.request(method, path, **kwargs)
    raise_for_error(response)
    return response.json() if response.content else None


def _expiry(expires_in: str | None) -> str | None:
    """``30d``, ``12h``, ``90m``, ``2w`` → an ISO time that far from now."""
    if expires_in is None:
        return None
    delta = parse_duration(expires_in, "--expires-in", units="mhdw")
    return (datetime.now(UTC) + delta).isoformat()


def _show_created(ctx: typer.Context, created: dict[str, Any]) -> None:
    if remote_of(ctx).wants_json:
        print_json(created)
        return
    replaces = f" replaces {created['replaces']} (revoked now)" if created.get("replaces") else ""
    console.print(
        f"key [bold]{created['id']}[/]{replaces} ({created['role']}, models "
        f"{','.join(created['models'])}); the secret is shown once, store it now:",
        highlight=False,
        soft_wrap=True,
    )
    # Plain print: a secret must not be re-wrapped or styled into a broken copy.
    print(created["key"])


@keys_app.command("create")
@reports_errors
def create_key(
    ctx: typer.Context,
    name: Annotated[str, typer.Option(help="What the key is for.")] = "key",
    role: Annotated[
        str, typer.Option(help="admin, deployer, consumer or metrics (a Prometheus scraper).")
    ] = "consumer",
    models: Annotated[
        str, typer.Option(help="Comma-separated model patterns, e.g. 'iris*,fraud-*'.")
    ] = "*",
    owner: Annotated[str | None, typer.Option(help="Who holds the key.")] = None,
    expires_in: Annotated[str | None, typer.Option(help="Lifetime: 30d, 12h, 2w.")] = None,
    rpm: Annotated[int | None, typer.Option(help="Requests per minute.")] = None,
    tpm: Annotated[int | None, typer.Option(help="Tokens per minute.")] = None,
    request_budget: Annotated[int | None, typer.Option(help="Requests per period.")] = None,
    token_budget: Annotated[int | None, typer.Option(help="Tokens per period.")] = None,
    budget_period: Annotated[str, typer.Option(help="day or month.")] = "month",
) -> None:
    """Create a key; its secret is printed once."""
    limits = {
        "requests_per_minute": rpm,
        "tokens_per_minute": tpm,
        "request_budget": request_budget,
        "token_budget": token_budget,
        "budget_period": budget_period,
    }
    body = {
        "name": name,
        "role": role,
        "models": [p.strip() for p in models.split(",") if p.strip()],
        "owner": owner,
        "expires_at": _expiry(expires_in),
        "limits": limits,
    }
    _show_created(ctx, _call(ctx, "POST", "/api/v1/keys", json=body))


@keys_app.command("list")
@reports_errors
def list_keys(
    ctx: typer.Context,
    all_keys: Annotated[bool, typer.Option("--all", help="Include revoked keys.")] = False,
) -> None:
    """List keys by their public prefix."""
    keys = _call(ctx, "GET", "/api/v1/keys", params={"include_revoked": str(all_keys).lower()})
    if remote_of(ctx).wants_json:
        print_json(keys)
        return
    rows = [[",".join(k[c]) if c == "models" else k[c] for c in _KEY_COLUMNS] for k in keys]
    print_table("keys", _KEY_COLUMNS, rows)


@keys_app.command("revoke")
@reports_errors
def revoke_key(
    ctx: typer.Context, key_id: Annotated[str, typer.Argument(help="Id or a unique start of it.")]
) -> None:
    """Revoke a key; every server refuses it within a second."""
    _call(ctx, "DELETE", f"/api/v1/keys/{key_id}")
    console.print(f"revoked {key_id}", highlight=False)


@keys_app.command("rotate")
@reports_errors
def rotate_key(
    ctx: typer.Context, key_id: Annotated[str, typer.Argument(help="Id or a unique start of it.")]
) -> None:
    """Replace a key by a new one (new id, same name, role, models and limits); the old
    key is revoked."""
    _show_created(ctx, _call(ctx, "POST", f"/api/v1/keys/{key_id}/rotate"))


@reports_errors
def audit_command(
    ctx: typer.Context,
    actor: Annotated[str | None, typer.Option(help="Key id or name.")] = None,
    action: Annotated[str | None, typer.Option(help="e.g. model.push, key.revoke.")] = None,
    since: Annotated[str | None, typer.Option(help="ISO time.")] = None,
    limit: Annotated[int, typer.Option(help="Most records to show.")] = 100,
) -> None:
    """Show the audit log, newest first."""
    given = {"actor": actor, "action": action, "since": since, "limit": limit}
    params = {name: value for name, value in given.items() if value is not None}
    records = _call(ctx, "GET", "/api/v1/audit", params=params)
    if remote_of(ctx).wants_json:
        print_json(records)
        return
    columns = ("at", "actor_name", "action", "target", "source", "outcome", "code")
    print_table("audit", columns, [[r[c] for c in columns] for r in records])
