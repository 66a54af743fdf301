"""The audit log (``/api/v1/audit``), admin only, newest first."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Query, Request

from maas.api.access import require
from maas.api.deps import get_services
from maas.auth.principal import Action
from maas.protocols.bounds import UtcDatetime
from maas.protocols.keys import AuditRecord
from maas.services import Services

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/audit", tags=["audit"])


@router.get("", summary="Audit records of management actions and failed logins")
async def list_audit(
    request: Request,
    actor: str | None = Query(None, description="Key id or key name of the actor."),
    action: str | None = Query(None, description="For example model.push, key.revoke."),
    since: UtcDatetime | None = Query(None, description="ISO time, inclusive (UTC if naive)."),
    limit: int = Query(100, ge=1, le=10_000),
    services: Services = Depends(get_services),
) -> list[AuditRecord]:
    require(request, Action.ADMIN)
    await services.audit.flush()  # read your own writes
    return await asyncio.to_thread(
        services.audit.query, actor=actor, action=action, since=since, limit=limit
    )
