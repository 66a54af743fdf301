"""The one check every router makes: may this caller do this, to this model?

``require`` answers a model the caller may not see exactly as a model that does not
exist (404 ``model_not_found``, the registry's own message), so a key learns nothing
about other teams' models. The role check comes first and names no model, so a
consumer pushing gets 403 whether or not the model exists. Then a model name that
could not be registered (a NUL byte, past 128 characters…) is refused, 400
``invalid_name``: such a name from a URL path must reach no lookup, usage record or
metric label. ``audited`` wraps a management action: it checks, runs the action and
appends one audit record of how it ended.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from starlette.requests import Request

from maas.auth.audit import AuditEntry, AuditLog, Outcome
from maas.auth.principal import ANONYMOUS_ADMIN, Action, Principal, authorize
from maas.errors import MaasError

__all__ = ["AuditNote", "audited", "caller", "require", "visible"]

T = TypeVar("T")


def caller(request: Request) -> Principal:
    principal: Principal = request.scope.get("state", {}).get("principal", ANONYMOUS_ADMIN)
    return principal


def require(request: Request, action: Action, *, model: str | None = None) -> Principal:
    """The caller, if it may do ``action`` (on ``model``); else ``Forbidden``,
    ``InvalidName`` or ``ModelNotFound``."""
    return authorize(caller(request), action, model)


def visible(request: Request, items: Iterable[T], name: Callable[[T], str]) -> list[T]:
    """The items of a listing whose model the caller may see."""
    principal = caller(request)
    return [item for item in items if principal.can_see(name(item))]


@dataclass
class AuditNote:
    """Handed to the action: who acts, and what it may add to the record."""

    principal: Principal
    target: str
    details: dict[str, Any] = field(default_factory=dict)


@asynccontextmanager
async def audited(
    request: Request,
    audit: AuditLog,
    action: str,
    target: str,
    *,
    need: Action,
    model: str | None = None,
) -> AsyncIterator[AuditNote]:
    """Check ``need`` (on ``model``), run the block, and record the outcome in
    ``audit`` either way."""
    note = AuditNote(caller(request), target)
    try:
        require(request, need, model=model)
    except MaasError as exc:
        _record(request, audit, action, note, "denied", exc.code)
        raise
    try:
        yield note
    except MaasError as exc:
        _record(request, audit, action, note, "error", exc.code)
        raise
    except Exception:
        _record(request, audit, action, note, "error", MaasError.code)
        raise
    _record(request, audit, action, note, "ok", None)


def _record(
    request: Request,
    audit: AuditLog,
    action: str,
    note: AuditNote,
    outcome: Outcome,
    code: str | None,
) -> None:
    client = request.client
    audit.record(
        AuditEntry(
            actor_key_id=note.principal.key_id,
            actor_name=note.principal.name,
            action=action,
            target=note.target,
            source=client.host if client else None,
            outcome=outcome,
            code=code,
            details=note.details,
        )
    )
