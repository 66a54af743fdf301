"""``GET /metrics``: the Prometheus scrape endpoint.

A key is needed by default, because the metrics name every model and version and
per-model request counts tell who uses what: a key of role ``metrics`` (made for a
Prometheus scraper, and good for nothing else) or an admin's. ``auth.metrics_public``
opens it to anyone. The serving metrics are recorded
where they happen (``maas.serving``), the request metrics in the V2 router.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from maas.api.access import require
from maas.api.deps import get_services
from maas.auth.principal import Action
from maas.observability.metrics import exposition
from maas.services import Services

__all__ = ["router"]

router = APIRouter(tags=["observability"])


@router.get(
    "/metrics",
    summary="Prometheus metrics (a metrics or admin key, unless MAAS_AUTH__METRICS_PUBLIC=true)",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
)
async def metrics(request: Request, services: Services = Depends(get_services)) -> Response:
    settings = services.settings
    if not settings.auth.metrics_public:
        require(request, Action.METRICS)
    # Off the loop: in multiprocess mode this reads every process's files.
    body, content_type = await asyncio.to_thread(exposition, settings.prometheus_multiproc_dir)
    return Response(body, media_type=content_type)
