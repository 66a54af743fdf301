"""KServe Open Inference Protocol (V2) REST: model metadata, readiness and inference.

``{version}`` in a path is a version number or an alias name. Tensor data never goes
through pydantic: the body is decoded by ``maas.protocols.v2`` straight into numpy.
Everything between decoding and encoding (access, admission, the call, metering,
metrics) is ``maas.services.inference.InferenceService``, shared with every transport.
"""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from maas.api.access import caller
from maas.api.deps import get_services, parse_selector
from maas.api.errors import response_for
from maas.api.lifetime import disconnect_of, requested_timeout
from maas.api.responses import json_response
from maas.protocols.v2 import (
    HEADER_LENGTH,
    InferRequest,
    choose_binary_outputs,
    decode_infer_request,
    encode_infer_response,
    parse_header_length,
    requested_max_tokens,
)
from maas.services import Services
from maas.services.inference import TensorCall

__all__ = ["answer_infer", "infer_target", "router"]

router = APIRouter(prefix="/v2/models", tags=["v2"])

_Services = Annotated[Services, Depends(get_services)]

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


async def _metadata(
    services: Services, request: Request, model: str, version: str | None
) -> Response:
    body = await services.inference.metadata(caller(request), model, parse_selector(version))
    return json_response(body)


async def _ready(services: Services, request: Request, model: str, version: str | None) -> Response:
    info, is_ready = await services.inference.model_ready(
        caller(request), model, parse_selector(version)
    )
    body = {"name": model, "version": str(info.version), "ready": is_ready}
    return json_response(body, status_code=200 if is_ready else 503)


async def _infer(services: Services, request: Request, model: str, version: str | None) -> Response:
    """Decode the body once the call is admitted, run it through the inference
    service, encode the outputs the caller asked for."""
    decoded: list[InferRequest] = []

    async def decode() -> TensorCall:
        body = await request.body()
        infer = decode_infer_request(
            body, parse_header_length(request.headers.get(HEADER_LENGTH)), services.decode_limits
        )
        decoded.append(infer)
        requested = [output.name for output in infer.outputs] if infer.outputs else None
        timeout_s = requested_timeout(infer.parameters, request.headers)
        max_tokens = requested_max_tokens(infer.parameters)
        return TensorCall(infer.inputs, requested, timeout_s, max_tokens)

    result = await services.inference.predict(
        caller(request),
        model,
        parse_selector(version),
        decode,
        disconnected=disconnect_of(request),
    )
    infer = decoded[0]
    served = str(result.version.version)
    payload, header_length = encode_infer_response(
        model_name=model,
        model_version=served,
        request_id=infer.id,
        outputs=result.outputs,
        parameters=None,
        binary_outputs=choose_binary_outputs(infer, list(result.outputs)),
    )
    headers = {"X-Model-Version": served, **result.headers}
    if header_length is not None:
        headers[HEADER_LENGTH] = str(header_length)
        return Response(payload, media_type="application/octet-stream", headers=headers)
    return Response(payload, media_type="application/json", headers=headers)


@router.get("/{model}", summary="Model metadata (default version)")
async def get_model(model: str, request: Request, services: _Services) -> Response:
    return await _metadata(services, request, model, None)


@router.get("/{model}/versions/{version}", summary="Model metadata of a version or alias")
async def get_model_version(
    model: str, version: str, request: Request, services: _Services
) -> Response:
    return await _metadata(services, request, model, version)


@router.get("/{model}/ready", summary="Model readiness (default version)")
async def model_ready(model: str, request: Request, services: _Services) -> Response:
    return await _ready(services, request, model, None)


@router.get("/{model}/versions/{version}/ready", summary="Readiness of a version or alias")
async def model_version_ready(
    model: str, version: str, request: Request, services: _Services
) -> Response:
    return await _ready(services, request, model, version)


_INFER_PATH = re.compile(r"/v2/models/([^/]+)(?:/versions/([^/]+))?/infer")


def infer_target(scope: Scope) -> tuple[str, str | None] | None:
    """``(model, version)`` when ``scope`` is a V2 inference call, else None."""
    if scope["type"] != "http" or scope["method"] != "POST":
        return None
    match = _INFER_PATH.fullmatch(scope["path"])
    return (match[1], match[2]) if match else None


async def answer_infer(
    services: Services, scope: Scope, receive: Receive, send: Send, target: tuple[str, str | None]
) -> None:
    """Answer a V2 inference call without FastAPI (``maas.api.gateway``): its route
    matching, dependency solving and wrappers were half the Python calls of an
    inference. Errors are rendered here, as FastAPI's handlers would render them."""
    request = Request(scope, receive, send)
    try:
        response = await _infer(services, request, *target)
    except Exception as exc:
        state = scope.get("state", {})
        response = response_for(exc, path=scope["path"], request_id=state.get("request_id"))
    await response(scope, receive, send)


# The FastAPI routes document inference in /docs; the gateway answers it before them.
@router.post("/{model}/infer", summary="Inference (default version)", openapi_extra=_INFER_DOC)
async def infer(model: str, request: Request, services: _Services) -> Response:
    return await _infer(services, request, model, None)


@router.post(
    "/{model}/versions/{version}/infer",
    summary="Inference on a version or alias",
    openapi_extra=_INFER_DOC,
)
async def infer_version(
    model: str, version: str, request: Request, services: _Services
) -> Response:
    return await _infer(services, request, model, version)
