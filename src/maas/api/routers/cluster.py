"""Where models run (``GET /api/v1/cluster``): nodes and replicas, admin only.

The answer names hosts, addresses and process ids across the cluster, which is the
operator's business, not a model user's: it needs the admin role, as the audit log does.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from maas.api.access import require
from maas.api.deps import get_services
from maas.api.responses import json_response
from maas.auth.principal import Action
from maas.services import Services

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["cluster"])


@router.get(
    "/cluster",
    summary="Nodes (resources, free), and each loaded model's replicas and where they run",
)
async def cluster_status(request: Request, services: Services = Depends(get_services)) -> Response:
    require(request, Action.ADMIN)
    return json_response(await services.models.cluster_status())
