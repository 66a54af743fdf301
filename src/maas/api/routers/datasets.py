"""Datasets for jobs (``/api/v1/datasets``): streamed uploads of CSV, Parquet, JSONL.

Like model pushes, the body is the raw file (``application/octet-stream``), streamed
to the store; the name, file name and format travel in the query string. A key's
model patterns apply to dataset names too: a team's key sees and uses its own
datasets only, and another team's look exactly like datasets that do not exist.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from maas.api.access import audited, caller, require, visible
from maas.api.deps import get_services
from maas.api.responses import json_response
from maas.auth.principal import Action
from maas.errors import DatasetNotFound, Forbidden
from maas.protocols.jobs import DatasetInfo
from maas.services import Services

__all__ = ["require_dataset", "router"]

router = APIRouter(prefix="/api/v1/datasets", tags=["datasets"])

_UPLOAD_DOC = {
    "requestBody": {
        "required": True,
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        "description": "The table: CSV with a header row, Parquet, or JSON Lines.",
    }
}


def require_dataset(request: Request, ref: str) -> None:
    """``DatasetNotFound`` for a dataset outside the caller's patterns (as if absent)."""
    if not caller(request).can_see(ref.partition("@")[0]):
        raise DatasetNotFound(f"dataset {ref!r} not found")


@router.post(
    "",
    summary="Upload a dataset (streaming)",
    status_code=201,
    response_model=DatasetInfo,
    openapi_extra=_UPLOAD_DOC,
)
async def push_dataset(
    request: Request,
    name: str = Query(..., description="Dataset name; jobs refer to it."),
    filename: str = Query(..., description="Original file name; its extension gives the format."),
    format: str | None = Query(None, description="csv, parquet or jsonl (else from filename)."),
    services: Services = Depends(get_services),
) -> Response:
    async with audited(request, services.audit, "dataset.push", name, need=Action.WRITE) as note:
        if not note.principal.can_see(name):
            raise Forbidden(
                f"this key may not push a dataset named {name!r} (outside its patterns)"
            )
        info = await services.datasets.push(
            name,
            request.stream(),
            filename=filename,
            fmt=format,
            created_by=note.principal.name,
        )
        note.details.update(digest=info.digest, rows=info.rows)
    return json_response(info, status_code=201)


@router.get("", summary="List datasets, newest first", response_model=list[DatasetInfo])
async def list_datasets(
    request: Request,
    name: str | None = Query(None, description="Only the uploads of this name."),
    services: Services = Depends(get_services),
) -> Response:
    require(request, Action.READ)
    found = await asyncio.to_thread(services.datasets.list_datasets, name)
    return json_response(visible(request, found, lambda dataset: dataset.name))


@router.get("/{ref}", summary="Show a dataset (NAME or NAME@sha256:…)", response_model=DatasetInfo)
async def get_dataset(
    ref: str, request: Request, services: Services = Depends(get_services)
) -> Response:
    require(request, Action.READ)
    require_dataset(request, ref)
    return json_response(await asyncio.to_thread(services.datasets.get, ref))
