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
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import orjson
from fastapi import APIRouter, Request
from pydantic import BaseModel, ValidationError
from starlette.responses import Response, StreamingResponse

from maas.api.access import require, visible
from maas.api.deps import get_services
from maas.api.lifetime import disconnect_of, requested_timeout
from maas.api.responses import json_response
from maas.auth.admission import Ticket, principal_of
from maas.auth.principal import Action
from maas.errors import AliasNotFound, InvalidRequest, MaasError, ModelNotFound, VersionNotFound
from maas.observability.metrics import UNRESOLVED, RequestMetrics
from maas.protocols import openai as oa
from maas.registry.refs import ModelRef, parse_ref
from maas.services.completions import Generation
from maas.serving.generation import Completion, TextDelta
from maas.serving.sampling import SamplingParams

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["openai"])

_METRICS = RequestMetrics("openai")
_CLIENT_CLOSED = 499
#: Version numbers are 32-bit in the registry's tables: a larger one names no version
#: (and must not reach the database, which would fail on it).
_MAX_VERSION = 2**31 - 1
R = TypeVar("R", bound=BaseModel)


def _body_example(example: dict[str, Any]) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"type": "object"}, "example": example}},
        }
    }


async def _parse(request: Request, schema: type[R]) -> R:
    """The body as ``schema``; a bad field is a 400 naming it in ``param``."""
    body = await request.body()
    if not body:
        raise InvalidRequest("the request body is empty; send a JSON object")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidRequest("the body must be a JSON object")
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        param = ".".join(str(part) for part in error.get("loc", ())) or None
        message = str(error.get("msg", "invalid request")).removeprefix("Value error, ")
        raise InvalidRequest(
            f"{param}: {message}" if param else message, details={"param": param}
        ) from None


def _model_ref(request: Request, model: str, action: Action) -> ModelRef:
    """``model`` parsed, once the caller may ``action`` on it. The access check comes
    first, so a hidden model answers exactly as a missing one, whatever its selector."""
    ref = parse_ref(model)
    require(request, action, model=ref.name)
    if isinstance(ref.selector, int) and ref.selector > _MAX_VERSION:
        raise ModelNotFound(f"model {ref.name!r} has no version {ref.selector}")
    return ref


@contextmanager
def _model_not_found() -> Iterator[None]:
    """A missing version or alias is, to an OpenAI client, a missing model."""
    try:
        yield
    except (VersionNotFound, AliasNotFound) as exc:
        raise ModelNotFound(exc.message) from None


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


async def _merged(generation: Generation) -> AsyncIterator[tuple[int, TextDelta]]:
    """The pieces of every choice as they come, tagged with the choice's index."""
    if len(generation.streams) == 1:
        async for delta in generation.streams[0]:
            yield 0, delta
        return
    queue: asyncio.Queue[tuple[int, TextDelta] | BaseException | None] = asyncio.Queue()

    async def pump(index: int) -> None:
        try:
            async for delta in generation.streams[index]:
                await queue.put((index, delta))
        except BaseException as exc:
            await queue.put(exc)
            raise
        finally:
            await queue.put(None)

    tasks = [asyncio.create_task(pump(i)) for i in range(len(generation.streams))]
    try:
        remaining = len(tasks)
        while remaining:
            item = await queue.get()
            if item is None:
                remaining -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class _Call:
    """One admitted generation call: its ticket, its metrics, and how it ended."""

    def __init__(self, request: Request, ticket: Ticket, model: str) -> None:
        self.request = request
        self.ticket = ticket
        self.model = model
        self.started = time.perf_counter()
        self.version = ""

    def finish(self, status: int, generation: Generation | None) -> None:
        units = None
        if generation is not None:
            units = {
                "prompt_tokens": generation.prompt_tokens,
                "completion_tokens": generation.completion_tokens,
            }
        elapsed = time.perf_counter() - self.started
        self.ticket.finish(status, units, elapsed)
        model, version = (self.model, self.version) if self.version else UNRESOLVED
        _METRICS.observe(model, version, status, elapsed)


async def _generate(
    request: Request,
    endpoint: str,
    body: oa.ChatCompletionRequest | oa.CompletionRequest,
    start: Callable[[], Any],
    render: Callable[[Generation, list[Completion]], dict[str, Any]],
    chunk: Callable[[str, int, int, TextDelta, bool], dict[str, Any]],
    id_prefix: str,
) -> Response:
    """The shared life of a chat or completions call: admit, start, then either wait
    for every choice (JSON) or stream them (SSE); meter it whichever way it ends."""
    services = get_services(request)
    ref = _model_ref(request, body.model, Action.INFER)
    ticket = await services.admission.admit(principal_of(request.state), ref.name, endpoint)
    call = _Call(request, ticket, ref.name)
    try:
        with _model_not_found():
            generation: Generation = await start()
    except MaasError as exc:
        call.finish(exc.status, None)
        raise
    call.version = str(generation.version.version)
    headers = {"X-Model-Version": call.version, **ticket.headers}
    if body.stream:
        stream = _stream(call, generation, body, chunk, id_prefix)
        return StreamingResponse(stream, media_type="text/event-stream", headers=headers)
    try:
        work = asyncio.gather(*(s.collect() for s in generation.streams))
        completions = await services.models.bounded(
            work,
            timeout_s=requested_timeout({}, request.headers),
            disconnected=disconnect_of(request),
        )
    except MaasError as exc:
        generation.cancel()
        call.finish(exc.status, generation)
        raise
    except asyncio.CancelledError:
        generation.cancel()
        call.finish(_CLIENT_CLOSED, generation)
        raise
    call.finish(200, generation)
    return json_response(render(generation, list(completions)), headers=headers)


async def _stream(
    call: _Call,
    generation: Generation,
    body: oa.ChatCompletionRequest | oa.CompletionRequest,
    chunk: Callable[[str, int, int, TextDelta, bool], dict[str, Any]],
    id_prefix: str,
) -> AsyncIterator[bytes]:
    id_, created = oa.new_id(id_prefix), int(time.time())
    with_usage = body.include_usage
    status = _CLIENT_CLOSED
    try:
        if isinstance(body, oa.ChatCompletionRequest):
            for index in range(len(generation.streams)):
                role = {"role": "assistant", "content": ""}
                yield _sse(oa.chat_chunk(id_, body.model, created, index, role, None,
                                         with_usage_field=with_usage))  # fmt: skip
        async for index, delta in _merged(generation):
            yield _sse(chunk(id_, created, index, delta, with_usage))
        if with_usage:
            usage = _usage(generation)
            yield _sse(
                {"id": id_, "object": _chunk_object(body), "created": created,
                 "model": body.model, "choices": [], "usage": usage}
            )  # fmt: skip
        yield b"data: [DONE]\n\n"
        status = 200
    except MaasError as exc:  # the stream has begun: the error is its last event
        status = int(exc.status)
        yield _sse({"error": {"message": exc.message, "type": "server_error", "code": exc.code}})
    finally:
        generation.cancel()
        call.finish(status, generation)


def _chunk_object(body: oa.ChatCompletionRequest | oa.CompletionRequest) -> str:
    if isinstance(body, oa.ChatCompletionRequest):
        return "chat.completion.chunk"
    return "text_completion"


def _usage(generation: Generation) -> dict[str, int]:
    return oa.usage_body(generation.prompt_tokens, generation.completion_tokens)


@router.get("/models", summary="Models this key may call (OpenAI)")
async def list_models(request: Request) -> Response:
    require(request, Action.READ)
    services = get_services(request)
    models = await asyncio.to_thread(services.registry.list_models)
    cards = [
        oa.model_card(m.name, m.created_at.timestamp())
        for m in visible(request, models, lambda m: m.name)
    ]
    return json_response({"object": "list", "data": cards})


@router.get("/models/{model}", summary="One model (OpenAI)")
async def get_model(model: str, request: Request) -> Response:
    """``name`` is the model; ``name:version`` or ``name:alias`` must resolve too."""
    ref = _model_ref(request, model, Action.READ)
    registry = get_services(request).registry
    with _model_not_found():
        if ref.selector is None:
            found = await asyncio.to_thread(registry.get_model, ref.name)
            created = found.created_at
        else:
            version = await asyncio.to_thread(registry.get_version, ref.name, ref.selector)
            created = version.created_at
    return json_response(oa.model_card(model, created.timestamp()))


_CHAT_EXAMPLE = {
    "model": "smollm2",
    "messages": [{"role": "user", "content": "What is the capital of France?"}],
    "max_tokens": 32,
    "temperature": 0,
}


@router.post(
    "/chat/completions",
    summary="Chat completion, streamed with stream=true (OpenAI)",
    openapi_extra=_body_example(_CHAT_EXAMPLE),
)
async def chat_completions(request: Request) -> Response:
    body = await _parse(request, oa.ChatCompletionRequest)
    services = get_services(request)
    messages = body.template_messages

    def start() -> Any:
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

    return await _generate(request, "openai.chat", body, start, render, chunk, "chatcmpl")


@router.post(
    "/completions",
    summary="Text completion (OpenAI legacy)",
    openapi_extra=_body_example({"model": "smollm2", "prompt": "Paris is", "max_tokens": 16}),
)
async def completions(request: Request) -> Response:
    body = await _parse(request, oa.CompletionRequest)
    services = get_services(request)

    def start() -> Any:
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

    return await _generate(request, "openai.completions", body, start, render, chunk, "cmpl")


@router.post(
    "/embeddings",
    summary="Embeddings (OpenAI)",
    openapi_extra=_body_example({"model": "minilm", "input": ["a sentence", "another"]}),
)
async def embeddings(request: Request) -> Response:
    body = await _parse(request, oa.EmbeddingRequest)
    services = get_services(request)
    ref = _model_ref(request, body.model, Action.INFER)
    ticket = await services.admission.admit(
        principal_of(request.state), ref.name, "openai.embeddings"
    )
    started = time.perf_counter()
    version = ""
    try:
        with ticket, _model_not_found():
            result = await services.text.embed(
                body.model, body.texts, timeout_s=requested_timeout({}, request.headers)
            )
            version = str(result.version.version)
            ticket.version = result.version.version
            vectors = _dimensions(result.vectors, body.dimensions)
            payload = oa.embedding_response(
                body.model, vectors, body.encoding_format, result.prompt_tokens
            )
            ticket.finish(
                200, {"prompt_tokens": result.prompt_tokens}, time.perf_counter() - started
            )
    except MaasError as exc:
        labels = (ref.name, version) if version else UNRESOLVED
        _METRICS.observe(*labels, int(exc.status), time.perf_counter() - started)
        raise
    _METRICS.observe(ref.name, version, 200, time.perf_counter() - started)
    return json_response(payload, headers={"X-Model-Version": version, **ticket.headers})


def _dimensions(vectors: Any, dimensions: int | None) -> Any:
    """OpenAI's ``dimensions``: the first ``dimensions`` components, renormalised."""
    import numpy as np

    if dimensions is None:
        return vectors
    if dimensions > vectors.shape[1]:
        raise InvalidRequest(
            f"dimensions: this model gives {vectors.shape[1]} dimensions at most",
            details={"param": "dimensions"},
        )
    cut = vectors[:, :dimensions]
    norms = np.linalg.norm(cut, axis=1, keepdims=True)
    return cut / np.where(norms == 0, 1, norms)
