"""Liveness, readiness and server metadata (KServe V2 health endpoints)."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from starlette.responses import Response

from maas import __version__
from maas.api.deps import get_services
from maas.api.responses import json_response
from maas.protocols.v2 import server_metadata
from maas.services import Services

__all__ = ["router"]

router = APIRouter(tags=["health"])


@router.get("/v2/health/live", summary="Liveness: the process answers")
async def live() -> Response:
    return json_response({"live": True})


@router.get(
    "/v2/health/ready",
    summary="Readiness: every version an alias points to is loaded",
    responses={503: {"description": "not ready"}},
)
async def ready(services: Services = Depends(get_services)) -> Response:
    is_ready = services.models.is_ready()
    body: dict[str, object] = {"ready": is_ready}
    if not is_ready and (loading := services.models.loading()):
        body["loading"] = loading  # aliased versions not serving yet
    if services.health_details:  # e.g. rate limits that are per server (not shared)
        body["details"] = services.health_details
    return json_response(body, status_code=200 if is_ready else 503)


@router.get("/v2", summary="Server metadata", tags=["v2"])
async def metadata() -> Response:
    return json_response(server_metadata("maas", __version__, ["binary_tensor_data"]))
