"""``POST /v1/rerank`` (and ``/rerank``, ``/v2/rerank``, where vLLM serves it too):
documents ordered by relevance to a query (``maas.services.rerank``), admitted,
metered in tokens and counted by ``InferenceService`` as any inference call. Errors
are OpenAI-shaped on every path, as vLLM's are."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from maas.api.access import caller
from maas.api.bodies import body_example, model_not_found, parse_json
from maas.api.deps import get_services
from maas.api.lifetime import requested_timeout
from maas.api.responses import json_response
from maas.protocols.rerank import RerankRequest, rerank_response
from maas.services import Services

__all__ = ["PATHS", "router"]

router = APIRouter(tags=["rerank"])

#: Where rerank is served: OpenAI-style, and vLLM's two other paths.
PATHS = ("/v1/rerank", "/rerank", "/v2/rerank")
_EXAMPLE = {
    "model": "minilm",
    "query": "What is the capital of Germany?",
    "documents": ["Berlin is the capital of Germany.", "Bananas are yellow."],
    "top_n": 1,
}


async def rerank(
    request: Request, services: Annotated[Services, Depends(get_services)]
) -> Response:
    body = await parse_json(request, RerankRequest)
    texts = body.texts
    with model_not_found():
        served = await services.inference.rerank(
            caller(request),
            body.model,
            body.query,
            texts,
            top_n=body.top_n or None,
            timeout_s=requested_timeout({}, request.headers),
        )
    ranked = served.result
    documents = texts if body.return_documents else None
    payload = rerank_response(body.model, ranked.results, documents, ranked.tokens)
    headers = {"X-Model-Version": str(ranked.version.version), **served.headers}
    return json_response(payload, headers=headers)


for _path in PATHS:
    router.add_api_route(
        _path,
        rerank,
        methods=["POST"],
        summary="Rerank documents by relevance to a query (Jina/Cohere shape)",
        openapi_extra=body_example(_EXAMPLE),
        include_in_schema=_path == PATHS[0],
    )
