"""API keys (``/api/v1/keys``), admin only: create, list, revoke, rotate.

The secret is in the answer to create and rotate only; listings show the public prefix.
Revocation reaches every worker within a second (``maas.auth.resolver``).
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from maas.api.access import audited, require
from maas.api.deps import get_services
from maas.api.responses import json_response
from maas.auth.principal import Action
from maas.protocols.keys import KeyCreate, KeyCreated, KeyInfo
from maas.services import Services

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/keys", tags=["keys"])


@router.post("", summary="Create a key (its secret is shown once)", status_code=201)
async def create_key(
    body: KeyCreate, request: Request, services: Services = Depends(get_services)
) -> KeyCreated:
    async with audited(request, services.audit, "key.create", body.name, need=Action.ADMIN) as note:
        created = await asyncio.to_thread(services.keys.create, body)
        note.target = created.id
        note.details.update(name=created.name, role=created.role, models=created.models)
    return created


@router.get("", summary="List keys (prefixes only)", response_model=list[KeyInfo])
async def list_keys(
    request: Request,
    include_revoked: bool = Query(False, description="Show revoked keys too."),
    services: Services = Depends(get_services),
) -> Response:
    require(request, Action.ADMIN)
    keys = await asyncio.to_thread(services.keys.list_keys, include_revoked=include_revoked)
    return json_response(keys)


@router.delete("/{key_id}", summary="Revoke a key", status_code=204)
async def revoke_key(
    key_id: str, request: Request, services: Services = Depends(get_services)
) -> Response:
    async with audited(request, services.audit, "key.revoke", key_id, need=Action.ADMIN) as note:
        revoked = await asyncio.to_thread(services.keys.revoke, key_id)
        note.target = revoked.id
    return Response(status_code=204)


@router.post("/{key_id}/rotate", summary="New secret for a key; the old one is revoked")
async def rotate_key(
    key_id: str, request: Request, services: Services = Depends(get_services)
) -> KeyCreated:
    async with audited(request, services.audit, "key.rotate", key_id, need=Action.ADMIN) as note:
        created = await asyncio.to_thread(services.keys.rotate, key_id)
        note.target = created.replaces or key_id
        note.details["new_id"] = created.id
    return created
