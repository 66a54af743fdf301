"""How a version is served (``/api/v1/models/{name}/versions/{version}/deployment``).

``PUT`` stores a ``DeploymentSpec`` (batching, instances, queue size) on the version
and redeploys it if loaded; ``GET …/status`` shows the live deployment: state, worker
process ids, queue depth.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from maas.api.access import audited, require
from maas.api.deps import get_services, parse_selector
from maas.api.responses import json_response
from maas.auth.principal import Action
from maas.protocols.management import DeploymentSpec, VersionInfo
from maas.services import Services

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/models", tags=["deployments"])


@router.put(
    "/{name}/versions/{version}/deployment",
    summary="Set how a version is served (batching, instances, queue)",
    response_model=VersionInfo,
)
async def set_deployment(
    name: str,
    version: int,
    body: DeploymentSpec,
    request: Request,
    services: Services = Depends(get_services),
) -> Response:
    target = f"{name}:{version}"
    async with audited(
        request, services.audit, "deployment.update", target, need=Action.WRITE, model=name
    ):
        info = await services.publisher.update_deployment(name, version, body)
    return json_response(info)


@router.get(
    "/{name}/versions/{version}/deployment/status",
    summary="Live state of a version's deployment: workers, pids, queue depth",
)
async def deployment_status(
    name: str, version: str, request: Request, services: Services = Depends(get_services)
) -> Response:
    require(request, Action.READ, model=name)
    info = await services.models.resolve(name, parse_selector(version))
    deployment = services.models.find(info.model, info.version)
    if deployment is None:
        body = {"model": info.model, "version": info.version, "state": "unloaded", "ready": False}
        body |= {"instances": info.deployment.instances, "pids": [], "queue_depth": 0}
        return json_response(body)
    return json_response(deployment.status())
