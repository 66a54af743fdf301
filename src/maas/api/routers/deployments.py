"""How a version is served (``/api/v1/models/{name}/versions/{version}/deployment``).

``PUT`` stores a ``DeploymentSpec`` (batching, instances, queue size) on the version
and redeploys it if loaded; ``GET …/status`` shows the live deployment: state, worker
process ids, queue depth; ``POST …/load`` and ``…/unload`` load a version now or free
its memory (it loads again on its next call). ``GET /api/v1/deployments`` lists what
is loaded, for the console's overview.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from maas.api.access import audited, require, visible
from maas.api.deps import get_services, parse_selector
from maas.api.responses import json_response
from maas.auth.principal import Action
from maas.protocols.management import DeploymentSpec, VersionInfo
from maas.services import Services

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["deployments"])


@router.put(
    "/models/{name}/versions/{version}/deployment",
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
    "/models/{name}/versions/{version}/deployment/status",
    summary="Live state of a version's deployment: workers, pids, queue depth",
)
async def deployment_status(
    name: str, version: str, request: Request, services: Services = Depends(get_services)
) -> Response:
    require(request, Action.READ, model=name)
    info = await services.models.resolve(name, parse_selector(version))
    return json_response(_status(services, info))


def _status(services: Services, info: VersionInfo) -> dict[str, Any]:
    deployment = services.models.find(info.model, info.version)
    if deployment is None:
        body = {"model": info.model, "version": info.version, "state": "unloaded", "ready": False}
        idle = {"pids": [], "nodes": [], "queue_depth": 0}
        return body | {"instances": info.deployment.instances, **idle}
    return deployment.status()


@router.post(
    "/models/{name}/versions/{version}/deployment/load",
    summary="Load a version now (it otherwise loads on its first call)",
)
async def load_version(
    name: str, version: int, request: Request, services: Services = Depends(get_services)
) -> Response:
    return await _change_loading(request, services, name, version, load=True)


@router.post(
    "/models/{name}/versions/{version}/deployment/unload",
    summary="Unload a version: in-flight calls finish; its next call loads it again",
)
async def unload_version(
    name: str, version: int, request: Request, services: Services = Depends(get_services)
) -> Response:
    return await _change_loading(request, services, name, version, load=False)


async def _change_loading(
    request: Request, services: Services, name: str, version: int, *, load: bool
) -> Response:
    """Load or unload one version, audited as ``deployment.load``/``deployment.unload``;
    answers the version's status after the change."""
    action = "deployment.load" if load else "deployment.unload"
    async with audited(
        request, services.audit, action, f"{name}:{version}", need=Action.WRITE, model=name
    ):
        info = await services.models.resolve(name, version)
        if load:
            await services.models.deployment(info)
        else:
            await services.models.unload(name, version)
    return json_response(_status(services, info))


@router.get("/deployments", summary="The loaded deployments the key may see")
async def list_deployments(
    request: Request, services: Services = Depends(get_services)
) -> Response:
    require(request, Action.READ)
    loaded = visible(request, services.models.loaded(), lambda d: d.version.model)
    return json_response([deployment.status() for deployment in loaded])
