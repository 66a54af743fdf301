"""Image classification from a browser form or ``curl -F``: ``POST /v2/models/{model}/
classify`` (and ``…/versions/{version}/classify``), ``multipart/form-data`` with one or
more files in fields named ``image``; the answer is each image's top labels and scores.

A convenience beside V2 inference, under the same path as the model's ``infer`` so the
same references, keys, limits and metering apply: the files become the ``image`` BYTES
tensor of an ``onnx-image`` model and go through ``InferenceService`` like any V2 call
(endpoint ``v2.classify``). Decoding and preprocessing are the runtime's, in its
thread; this router only reads the form and writes JSON.
"""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, Request
from starlette.datastructures import UploadFile
from starlette.responses import Response

from maas.api.access import caller
from maas.api.deps import get_services, parse_selector
from maas.api.forms import multipart_form
from maas.api.lifetime import disconnect_of, requested_timeout
from maas.api.responses import json_response
from maas.errors import InvalidInput
from maas.services import Services
from maas.services.inference import TensorCall

__all__ = ["router"]

router = APIRouter(prefix="/v2/models", tags=["images"])

_Services = Annotated[Services, Depends(get_services)]
_FIELD = "image"
#: Files one form may carry; each is an image decoded in the model's thread.
_MAX_FILES = 64
_OUTPUTS = ["top_labels", "top_scores"]

_CLASSIFY_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        _FIELD: {"type": "array", "items": {"type": "string", "format": "binary"}}
                    },
                },
            }
        },
    },
    "parameters": [
        {
            "name": "top_k",
            "in": "query",
            "required": False,
            "schema": {"type": "integer", "minimum": 1},
            "description": "Labels per image (at most the model's top_k).",
        }
    ],
}


async def _images(request: Request) -> tuple[np.ndarray, list[str]]:
    """The uploaded files of the ``image`` fields as a BYTES tensor, and their names."""
    async with multipart_form(
        request,
        expected=f"the images, in file fields named {_FIELD!r},",
        extra=("onnx-image", "vision"),
        max_files=_MAX_FILES,
        max_fields=_MAX_FILES,
    ) as form:
        uploads = [item for item in form.getlist(_FIELD) if isinstance(item, UploadFile)]
        if not uploads:
            raise InvalidInput(f"no file in a field named {_FIELD!r}")
        tensor = np.empty(len(uploads), dtype=object)
        tensor[:] = [await upload.read() for upload in uploads]
        return tensor, [upload.filename or "" for upload in uploads]


def _top_k(request: Request) -> int | None:
    value = request.query_params.get("top_k")
    if value is None:
        return None
    if not value.isascii() or not value.isdigit() or int(value) < 1:
        raise InvalidInput("top_k must be a positive integer", details={"param": "top_k"})
    return int(value)


async def _classify(
    services: Services, request: Request, model: str, version: str | None
) -> Response:
    top_k = _top_k(request)
    names: list[str] = []

    async def decode() -> TensorCall:
        images, filenames = await _images(request)
        names.extend(filenames)
        return TensorCall({_FIELD: images}, _OUTPUTS, requested_timeout({}, request.headers))

    result = await services.inference.predict(
        caller(request),
        model,
        parse_selector(version),
        decode,
        endpoint="v2.classify",
        disconnected=disconnect_of(request),
    )
    labels, scores = result.outputs["top_labels"], result.outputs["top_scores"]
    served = str(result.version.version)
    body = {
        "model_name": model,
        "model_version": served,
        "results": [
            {
                "filename": name,
                "labels": [
                    {"label": label.decode(), "score": float(score)}
                    for label, score in zip(row_labels[:top_k], row_scores[:top_k], strict=True)
                ],
            }
            for name, row_labels, row_scores in zip(names, labels, scores, strict=True)
        ],
    }
    return json_response(body, headers={"X-Model-Version": served, **result.headers})


@router.post(
    "/{model}/classify", summary="Classify images (default version)", openapi_extra=_CLASSIFY_DOC
)
async def classify(model: str, request: Request, services: _Services) -> Response:
    return await _classify(services, request, model, None)


@router.post(
    "/{model}/versions/{version}/classify",
    summary="Classify images with a version or alias",
    openapi_extra=_CLASSIFY_DOC,
)
async def classify_version(
    model: str, version: str, request: Request, services: _Services
) -> Response:
    return await _classify(services, request, model, version)
