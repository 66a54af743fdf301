"""Operator actions on the whole server (``/api/v1/admin``), admin only and audited."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Request

from maas.api.access import audited
from maas.api.deps import get_services
from maas.auth.principal import Action
from maas.protocols.gc import GcReport, GcRequest
from maas.services import Services

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/admin", tags=["admin"])


@router.post(
    "/gc",
    summary="Delete artifacts no version, dataset or job references (dry_run: list them)",
)
async def collect_garbage(
    request: Request, body: GcRequest | None = None, services: Services = Depends(get_services)
) -> GcReport:
    """One garbage collection pass over the artifact stores and the model cache; blobs
    changed within the grace window (a push in progress) stay. 409 ``gc_in_progress``
    while another pass runs."""
    wanted = body or GcRequest()
    target = "artifacts"
    async with audited(request, services.audit, "artifacts.gc", target, need=Action.ADMIN) as note:
        note.details.update(dry_run=wanted.dry_run, grace_s=wanted.grace_s)
        report = await asyncio.to_thread(
            services.orphans.collect, dry_run=wanted.dry_run, grace_s=wanted.grace_s
        )
        note.details.update(
            collected=len(report.collected),
            caches=len(report.caches),
            freed_bytes=report.freed_bytes,
        )
    return report
