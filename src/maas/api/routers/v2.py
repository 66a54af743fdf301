"""KServe Open Inference Protocol (V2) REST: model metadata, readiness and inference.

``{version}`` in a path is a version number or an alias name. Tensor data never goes
through pydantic: the body is decoded by ``maas.protocols.v2`` straight into numpy.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Mapping

import numpy as np
from fastapi import APIRouter, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from maas.api.access import require
from maas.api.deps import get_services, parse_selector
from maas.api.errors import response_for
from maas.api.lifetime import disconnect_of, requested_timeout
from maas.api.responses import json_response
from maas.auth.admission import principal_of
from maas.auth.principal import Action
from maas.errors import InvalidName, MaasError, NotFound
from maas.observability.metrics import UNRESOLVED, RequestMetrics
from maas.protocols.v2 import (
    HEADER_LENGTH,
    choose_binary_outputs,
    decode_infer_request,
    encode_infer_response,
    model_metadata,
    parse_header_length,
)

__all__ = ["answer_infer", "infer_target", "router"]

router = APIRouter(prefix="/v2/models", tags=["v2"])

_PLATFORMS = {"sklearn": "sklearn", "onnx": "onnxruntime_onnx", "pickle": "sklearn"}

_INFER_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"type": "object"},
                "example": {
                    "inputs": [
                        {
                            "name": "input",
                            "datatype": "FP64",
                            "shape": [1, 4],
                            "data": [5.1, 3.5, 1.4, 0.2],
                        }
                    ]
                },
            },
            "application/octet-stream": {
                "schema": {"type": "string", "format": "binary"},
                "description": "Triton binary tensor extension; "
                "set Inference-Header-Content-Length.",
            },
        },
    }
}


async def _metadata(request: Request, model: str, version: str | None) -> Response:
    require(request, Action.READ, model=model)
    services = get_services(request)
    info = await services.models.resolve(model, parse_selector(version))
    versions = await asyncio.to_thread(services.registry.list_versions, model)
    platform = _PLATFORMS.get(info.framework, info.framework)
    body = model_metadata(model, [str(v.version) for v in versions], platform, info.signature)
    if version is not None:
        body["versions"] = [str(info.version)]
    return json_response(body)


async def _ready(request: Request, model: str, version: str | None) -> Response:
    require(request, Action.READ, model=model)
    services = get_services(request)
    info = await services.models.resolve(model, parse_selector(version))
    deployment = services.models.find(info.model, info.version)
    draining = services.models.is_shutting_down  # new inference would get 503
    is_ready = not draining and deployment is not None and deployment.is_ready
    body = {"name": model, "version": str(info.version), "ready": is_ready}
    return json_response(body, status_code=200 if is_ready else 503)


async def _infer(request: Request, model: str, version: str | None) -> Response:
    require(request, Action.INFER, model=model)
    services = get_services(request)
    ticket = await services.admission.admit(principal_of(request.state), model, "v2.infer")
    with ticket:  # meters the call, failures included
        body = await request.body()
        infer = decode_infer_request(
            body, parse_header_length(request.headers.get(HEADER_LENGTH)), services.decode_limits
        )
        requested = [output.name for output in infer.outputs] if infer.outputs else None
        started = time.perf_counter()
        served_version, outputs = await services.models.predict(
            model,
            parse_selector(version),
            infer.inputs,
            requested,
            timeout_s=requested_timeout(infer.parameters, request.headers),
            disconnected=disconnect_of(request),
        )
        compute_s = time.perf_counter() - started
        ticket.version = served_version.version
        served = str(served_version.version)
        payload, header_length = encode_infer_response(
            model_name=model,
            model_version=served,
            request_id=infer.id,
            outputs=outputs,
            parameters=None,
            binary_outputs=choose_binary_outputs(infer, list(outputs)),
        )
        ticket.finish(200, {"rows": _rows(infer.inputs)}, compute_s)
    headers = {"X-Model-Version": served, **ticket.headers}
    if header_length is not None:
        headers[HEADER_LENGTH] = str(header_length)
        return Response(payload, media_type="application/octet-stream", headers=headers)
    return Response(payload, media_type="application/json", headers=headers)


_METRICS = RequestMetrics("v2")
_CLIENT_CLOSED = 499


async def _observed_infer(request: Request, model: str, version: str | None) -> Response:
    """``_infer``, counted in ``maas_requests_total`` and timed: the one place of it.

    Labels come from the registry: the served version on success; on an error, the
    version the reference resolves to (a cache hit), or ``UNRESOLVED`` when the model
    does not exist or the call was refused before it resolved.
    """
    started = time.perf_counter()
    try:
        response = await _infer(request, model, version)
    except MaasError as exc:
        labels = await _labels_after_error(request, model, version, exc)
        _METRICS.observe(*labels, int(exc.status), time.perf_counter() - started)
        raise
    except BaseException as exc:
        code = _CLIENT_CLOSED if isinstance(exc, asyncio.CancelledError) else 500
        _METRICS.observe(*UNRESOLVED, code, time.perf_counter() - started)
        raise
    served = response.headers.get("x-model-version", "")  # set by _infer on every answer
    _METRICS.observe(model, served, response.status_code, time.perf_counter() - started)
    return response


async def _labels_after_error(
    request: Request, model: str, version: str | None, exc: MaasError
) -> tuple[str, str]:
    if isinstance(exc, NotFound | InvalidName) or exc.status in (401, 403):
        return UNRESOLVED
    try:
        info = await get_services(request).models.resolve(model, parse_selector(version))
    except MaasError:
        return UNRESOLVED
    return info.model, str(info.version)


def _rows(inputs: Mapping[str, np.ndarray]) -> int:
    """Rows of a batch: the first dimension of the first input (1 for a scalar)."""
    first = next(iter(inputs.values()), None)
    return int(first.shape[0]) if first is not None and first.ndim else 1


@router.get("/{model}", summary="Model metadata (default version)")
async def get_model(model: str, request: Request) -> Response:
    return await _metadata(request, model, None)


@router.get("/{model}/versions/{version}", summary="Model metadata of a version or alias")
async def get_model_version(model: str, version: str, request: Request) -> Response:
    return await _metadata(request, model, version)


@router.get("/{model}/ready", summary="Model readiness (default version)")
async def model_ready(model: str, request: Request) -> Response:
    return await _ready(request, model, None)


@router.get("/{model}/versions/{version}/ready", summary="Readiness of a version or alias")
async def model_version_ready(model: str, version: str, request: Request) -> Response:
    return await _ready(request, model, version)


_INFER_PATH = re.compile(r"/v2/models/([^/]+)(?:/versions/([^/]+))?/infer")


def infer_target(scope: Scope) -> tuple[str, str | None] | None:
    """``(model, version)`` when ``scope`` is a V2 inference call, else None."""
    if scope["type"] != "http" or scope["method"] != "POST":
        return None
    match = _INFER_PATH.fullmatch(scope["path"])
    return (match[1], match[2]) if match else None


async def answer_infer(
    scope: Scope, receive: Receive, send: Send, target: tuple[str, str | None]
) -> None:
    """Answer a V2 inference call without FastAPI (``maas.api.gateway``): its route
    matching, dependency solving and wrappers were half the Python calls of an
    inference. Errors are rendered here, as FastAPI's handlers would render them."""
    request = Request(scope, receive, send)
    try:
        response = await _observed_infer(request, *target)
    except Exception as exc:
        state = scope.get("state", {})
        response = response_for(exc, path=scope["path"], request_id=state.get("request_id"))
    await response(scope, receive, send)


# The FastAPI routes document inference in /docs; the gateway answers it before them.
@router.post("/{model}/infer", summary="Inference (default version)", openapi_extra=_INFER_DOC)
async def infer(model: str, request: Request) -> Response:
    return await _observed_infer(request, model, None)


@router.post(
    "/{model}/versions/{version}/infer",
    summary="Inference on a version or alias",
    openapi_extra=_INFER_DOC,
)
async def infer_version(model: str, version: str, request: Request) -> Response:
    return await _observed_infer(request, model, version)
