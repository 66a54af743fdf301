"""Datasets for jobs (``/api/v1/datasets``): streamed uploads of CSV, Parquet, JSONL.

Like model pushes, the body is the raw file (``application/octet-stream``), streamed
to the store; the name, file name and format travel in the query string.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from maas.api.access import audited, require
from maas.api.deps import get_services
from maas.api.responses import json_response
from maas.auth.principal import Action
from maas.protocols.jobs import DatasetInfo
from maas.services import Services

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/datasets", tags=["datasets"])

_UPLOAD_DOC = {
    "requestBody": {
        "required": True,
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        "description": "The table: CSV with a header row, Parquet, or JSON Lines.",
    }
}


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
    async with audited(request, "dataset.push", name, need=Action.WRITE) as note:
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
    return json_response(await asyncio.to_thread(services.datasets.list_datasets, name))


@router.get("/{ref}", summary="Show a dataset (NAME or NAME@sha256:…)", response_model=DatasetInfo)
async def get_dataset(
    ref: str, request: Request, services: Services = Depends(get_services)
) -> Response:
    require(request, Action.READ)
    return json_response(await asyncio.to_thread(services.datasets.get, ref))
