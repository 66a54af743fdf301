"""Management API for models, versions and aliases (``/api/v1/models``).

Uploads are the raw request body (``application/octet-stream``), streamed to the
artifact store chunk by chunk: a 1 GB model never sits in memory.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from maas.api.access import audited, require, visible
from maas.api.deps import get_services, parse_selector
from maas.api.responses import json_response
from maas.auth.principal import Action
from maas.errors import InvalidInput
from maas.protocols.bounds import json_problem
from maas.protocols.management import AliasInfo, AliasSet, ModelCreate, ModelInfo, VersionInfo
from maas.services import Services

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/models", tags=["models"])

_UPLOAD_DOC = {
    "requestBody": {
        "required": True,
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        "description": "The artifact: .skops, .onnx (pickle/joblib only on a trusting server).",
    }
}


@router.get("", summary="List models", response_model=list[ModelInfo])
async def list_models(request: Request, services: Services = Depends(get_services)) -> Response:
    require(request, Action.READ)
    models = await asyncio.to_thread(services.registry.list_models)
    return json_response(visible(request, models, lambda model: model.name))


@router.post("", summary="Create a model", status_code=201, response_model=ModelInfo)
async def create_model(
    body: ModelCreate, request: Request, services: Services = Depends(get_services)
) -> Response:
    async with audited(
        request, services.audit, "model.create", body.name, need=Action.WRITE, model=body.name
    ):
        info = await asyncio.to_thread(
            services.registry.create_model, body.name, body.description, body.task
        )
    return json_response(info, status_code=201)


@router.get("/{name}", summary="Show a model", response_model=ModelInfo)
async def get_model(
    name: str, request: Request, services: Services = Depends(get_services)
) -> Response:
    require(request, Action.READ, model=name)
    return json_response(await asyncio.to_thread(services.registry.get_model, name))


@router.delete("/{name}", summary="Delete a model, its versions and aliases", status_code=204)
async def delete_model(
    name: str, request: Request, services: Services = Depends(get_services)
) -> Response:
    async with audited(
        request, services.audit, "model.delete", name, need=Action.WRITE, model=name
    ):
        await services.publisher.delete_model(name)
    return Response(status_code=204)


@router.get("/{name}/versions", summary="List versions", response_model=list[VersionInfo])
async def list_versions(
    name: str, request: Request, services: Services = Depends(get_services)
) -> Response:
    require(request, Action.READ, model=name)
    return json_response(await asyncio.to_thread(services.registry.list_versions, name))


def _parse_metadata(raw: str | None) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"metadata is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidInput("metadata must be a JSON object")
    problem = json_problem(value)
    if problem is not None:
        raise InvalidInput(f"metadata cannot be stored: {problem}")
    return value


@router.post(
    "/{name}/versions",
    summary="Push a new version (streaming upload)",
    status_code=201,
    response_model=VersionInfo,
    openapi_extra=_UPLOAD_DOC,
)
async def push_version(
    name: str,
    request: Request,
    filename: str = Query(
        ..., max_length=255, description="Original file name; its extension helps detection."
    ),
    alias: str | None = Query(None, description="Point this alias at the new version."),
    description: str | None = Query(None, description="Description, if the model is new."),
    metadata: str | None = Query(None, description="Free metadata as a JSON object."),
    services: Services = Depends(get_services),
) -> Response:
    async with audited(
        request, services.audit, "model.push", name, need=Action.WRITE, model=name
    ) as note:
        info = await services.publisher.push(
            name,
            request.stream(),
            filename=filename,
            alias=alias,
            description=description,
            metadata=_parse_metadata(metadata),
            created_by=note.principal.name,
        )
        note.details.update(version=info.version, digest=info.digest, alias=alias)
    return json_response(info, status_code=201)


@router.get("/{name}/versions/{version}", summary="Show a version", response_model=VersionInfo)
async def get_version(
    name: str, version: str, request: Request, services: Services = Depends(get_services)
) -> Response:
    require(request, Action.READ, model=name)
    selector = parse_selector(version)
    return json_response(await asyncio.to_thread(services.registry.get_version, name, selector))


@router.delete("/{name}/versions/{version}", summary="Delete a version", status_code=204)
async def delete_version(
    name: str, version: int, request: Request, services: Services = Depends(get_services)
) -> Response:
    target = f"{name}:{version}"
    async with audited(
        request, services.audit, "version.delete", target, need=Action.WRITE, model=name
    ):
        await services.publisher.delete_version(name, version)
    return Response(status_code=204)


@router.get("/{name}/aliases", summary="List aliases", response_model=list[AliasInfo])
async def list_aliases(
    name: str, request: Request, services: Services = Depends(get_services)
) -> Response:
    require(request, Action.READ, model=name)
    return json_response(await asyncio.to_thread(services.registry.list_aliases, name))


@router.put(
    "/{name}/aliases/{alias}", summary="Point an alias at a version", response_model=AliasInfo
)
async def set_alias(
    name: str,
    alias: str,
    body: AliasSet,
    request: Request,
    force: bool = Query(
        False,
        description="Promote even past the quality-drop threshold, or to another signature.",
    ),
    services: Services = Depends(get_services),
) -> Response:
    target = f"{name}:{alias}"
    async with audited(
        request, services.audit, "alias.set", target, need=Action.WRITE, model=name
    ) as note:
        note.details["version"] = body.version
        if force:
            note.details["force"] = True
        info = await services.publisher.set_alias(name, alias, body.version, force=force)
    return json_response(info)


@router.delete("/{name}/aliases/{alias}", summary="Remove an alias", status_code=204)
async def delete_alias(
    name: str, alias: str, request: Request, services: Services = Depends(get_services)
) -> Response:
    target = f"{name}:{alias}"
    async with audited(
        request, services.audit, "alias.delete", target, need=Action.WRITE, model=name
    ):
        await services.publisher.delete_alias(name, alias)
    return Response(status_code=204)
