"""The OpenAI API: ``/v1/models``, ``/v1/chat/completions``, ``/v1/completions``,
``/v1/embeddings``, behaving as the official SDK expects.

Same keys, model patterns, limits and metering as every other call: a key sees only
the models its patterns match, and tokens (prompt and completion) feed the usage
records and the tokens-per-minute limits. Errors are OpenAI-shaped (``maas.api.errors``).
As in OpenAI, where ``model`` is one opaque id, a reference that names nothing
servable (no such model, version or alias) is 404 ``model_not_found``; the message
says which part is missing.
Streaming answers are server-sent events, ``data: {chunk}`` lines ending with
``data: [DONE]``; a client that hangs up cancels its sequences at the next token.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Request
from starlette.responses import Response, StreamingResponse

from maas.api.access import caller, require, visible
from maas.api.bodies import body_example, model_not_found, parse_json
from maas.api.deps import get_services
from maas.api.errors import error_body_for, request_id_of
from maas.api.lifetime import disconnect_of, requested_timeout
from maas.api.responses import json_response
from maas.auth.principal import Action
from maas.protocols import openai as oa
from maas.services import Services
from maas.services.completions import Generation
from maas.services.inference import CLIENT_CLOSED, GenerationCall
from maas.serving.generation import Completion, TextDelta
from maas.serving.sampling import SamplingParams

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["openai"])

_Services = Annotated[Services, Depends(get_services)]


def _sampling(body: oa.ChatCompletionRequest | oa.CompletionRequest) -> SamplingParams:
    if isinstance(body, oa.ChatCompletionRequest):
        logprobs, top = body.logprobs, body.top_logprobs or 0
    else:
        logprobs, top = body.logprobs is not None, body.logprobs or 0
    return SamplingParams(
        max_tokens=body.token_limit,
        temperature=body.temperature,
        top_p=body.top_p,
        stop=body.stops,
        seed=body.seed,
        ignore_eos=body.ignore_eos,
        logprobs=logprobs,
        top_logprobs=top,
    )


def _sse(data: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(data) + b"\n\n"


async def _generate(
    services: Services,
    request: Request,
    endpoint: str,
    body: oa.ChatCompletionRequest | oa.CompletionRequest,
    start: Callable[[], Awaitable[Generation]],
    render: Callable[[Generation, list[Completion]], dict[str, Any]],
    chunk: Callable[[str, int, int, TextDelta, bool], dict[str, Any]],
    id_prefix: str,
) -> Response:
    """The shared life of a chat or completions call (admitted, started and metered
    by ``InferenceService.generate``): wait for every choice (JSON) or stream them."""

    async def started() -> Generation:
        with model_not_found():
            return await start()

    call = await services.inference.generate(caller(request), body.model, endpoint, started)
    assert call.generation is not None
    if body.stream:
        stream = _stream(call, request, body, chunk, id_prefix)
        return StreamingResponse(stream, media_type="text/event-stream", headers=call.headers)
    completions = await call.collect(
        timeout_s=requested_timeout({}, request.headers), disconnected=disconnect_of(request)
    )
    return json_response(render(call.generation, completions), headers=call.headers)


async def _stream(
    call: GenerationCall,
    request: Request,
    body: oa.ChatCompletionRequest | oa.CompletionRequest,
    chunk: Callable[[str, int, int, TextDelta, bool], dict[str, Any]],
    id_prefix: str,
) -> AsyncIterator[bytes]:
    generation = call.generation
    assert generation is not None
    id_, created = oa.new_id(id_prefix), int(time.time())
    with_usage = body.include_usage
    try:
        if isinstance(body, oa.ChatCompletionRequest):
            for index in range(len(generation.streams)):
                role = {"role": "assistant", "content": ""}
                yield _sse(oa.chat_chunk(id_, body.model, created, index, role, None,
                                         with_usage_field=with_usage))  # fmt: skip
        async with aclosing(call.stream()) as pieces:
            async for index, delta in pieces:
                yield _sse(chunk(id_, created, index, delta, with_usage))
        if with_usage:
            usage = _usage(generation)
            yield _sse(
                {"id": id_, "object": _chunk_object(body), "created": created,
                 "model": body.model, "choices": [], "usage": usage}
            )  # fmt: skip
        yield b"data: [DONE]\n\n"
    except Exception as exc:  # the stream has begun: the error is its last event
        path = request.url.path
        yield _sse(error_body_for(exc, path=path, request_id=request_id_of(request)))
    finally:  # a no-op unless the caller hung up before the pieces began
        generation.cancel()
        call.finish(CLIENT_CLOSED)


def _chunk_object(body: oa.ChatCompletionRequest | oa.CompletionRequest) -> str:
    if isinstance(body, oa.ChatCompletionRequest):
        return "chat.completion.chunk"
    return "text_completion"


def _usage(generation: Generation) -> dict[str, int]:
    return oa.usage_body(generation.prompt_tokens, generation.completion_tokens)


@router.get("/models", summary="Models this key may call (OpenAI)")
async def list_models(request: Request, services: _Services) -> Response:
    require(request, Action.READ)
    models = await asyncio.to_thread(services.registry.list_models)
    cards = [
        oa.model_card(m.name, m.created_at.timestamp())
        for m in visible(request, models, lambda m: m.name)
    ]
    return json_response({"object": "list", "data": cards})


@router.get("/models/{model}", summary="One model (OpenAI)")
async def get_model(model: str, request: Request, services: _Services) -> Response:
    """``name`` is the model; ``name:version`` or ``name:alias`` must resolve too."""
    ref = services.inference.text_ref(caller(request), model, Action.READ)
    registry = services.registry
    with model_not_found():
        if ref.selector is None:
            found = await asyncio.to_thread(registry.get_model, ref.name)
            created = found.created_at
        else:
            version = await asyncio.to_thread(registry.get_version, ref.name, ref.selector)
            created = version.created_at
    return json_response(oa.model_card(model, created.timestamp()))


_CHAT_EXAMPLE = {
    "model": "smollm2",
    "messages": [{"role": "user", "content": "What is the capital of Germany?"}],
    "max_tokens": 32,
    "temperature": 0,
}


@router.post(
    "/chat/completions",
    summary="Chat completion, streamed with stream=true (OpenAI)",
    openapi_extra=body_example(_CHAT_EXAMPLE),
)
async def chat_completions(request: Request, services: _Services) -> Response:
    body = await parse_json(request, oa.ChatCompletionRequest)
    messages = body.template_messages

    def start() -> Awaitable[Generation]:
        return services.text.chat(body.model, messages, _sampling(body), body.n, body.output)

    def render(generation: Generation, done: list[Completion]) -> dict[str, Any]:
        choices = [(c.text, c.finish_reason) for c in done]
        logprobs = [oa.chat_logprobs(c.logprobs) for c in done] if body.logprobs else None
        return oa.chat_response(
            oa.new_id("chatcmpl"), body.model, choices, _usage(generation),
            tool_calls=[c.tool_calls for c in done], logprobs=logprobs,
        )  # fmt: skip

    def chunk(id_: str, created: int, index: int, delta: TextDelta, usage: bool) -> dict[str, Any]:
        content: dict[str, Any] = {"content": delta.text} if delta.text else {}
        if delta.tool_calls:
            content["tool_calls"] = oa.tool_calls_body(delta.tool_calls, indexed=True)
        logprobs = oa.chat_logprobs(delta.logprobs) if body.logprobs else None
        return oa.chat_chunk(
            id_, body.model, created, index, content, delta.finish_reason,
            with_usage_field=usage, logprobs=logprobs,
        )  # fmt: skip

    return await _generate(services, request, "openai.chat", body, start, render, chunk, "chatcmpl")


@router.post(
    "/completions",
    summary="Text completion (OpenAI legacy)",
    openapi_extra=body_example({"model": "smollm2", "prompt": "Paris is", "max_tokens": 16}),
)
async def completions(request: Request, services: _Services) -> Response:
    body = await parse_json(request, oa.CompletionRequest)

    def start() -> Awaitable[Generation]:
        return services.text.complete(body.model, body.prompts, _sampling(body), body.n)

    wants_logprobs = body.logprobs is not None

    def render(generation: Generation, done: list[Completion]) -> dict[str, Any]:
        choices = [(c.text, c.finish_reason) for c in done]
        logprobs = [oa.completion_logprobs(c.logprobs) for c in done] if wants_logprobs else None
        return oa.completion_response(
            oa.new_id("cmpl"), body.model, choices, _usage(generation), logprobs=logprobs
        )

    def chunk(id_: str, created: int, index: int, delta: TextDelta, usage: bool) -> dict[str, Any]:
        logprobs = oa.completion_logprobs(delta.logprobs) if wants_logprobs else None
        return oa.completion_chunk(
            id_, body.model, created, index, delta.text, delta.finish_reason,
            with_usage_field=usage, logprobs=logprobs,
        )  # fmt: skip

    return await _generate(
        services, request, "openai.completions", body, start, render, chunk, "cmpl"
    )


@router.post(
    "/embeddings",
    summary="Embeddings (OpenAI)",
    openapi_extra=body_example({"model": "minilm", "input": ["a sentence", "another"]}),
)
async def embeddings(request: Request, services: _Services) -> Response:
    body = await parse_json(request, oa.EmbeddingRequest)
    with model_not_found():
        result = await services.inference.embed(
            caller(request),
            body.model,
            body.texts,
            dimensions=body.dimensions,
            timeout_s=requested_timeout({}, request.headers),
        )
    payload = oa.embedding_response(
        body.model, result.vectors, body.encoding_format, result.prompt_tokens
    )
    version = str(result.version.version)
    return json_response(payload, headers={"X-Model-Version": version, **result.headers})
