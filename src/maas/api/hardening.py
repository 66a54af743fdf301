"""Input hardening that FastAPI does not do for us, as raw ASGI wrappers.

* ``Deadline``: a request must start its answer within ``deadline_s`` or gets 504
  ``request_timeout``. Streams (SSE) are bounded only until their first byte, and
  artifact uploads, which may take long for a large file, not at all.
* ``JsonDepthCap``: management and OpenAI JSON bodies are parsed by the stdlib
  ``json`` module, which answers a deeply nested body with ``RecursionError`` (a 500)
  or slowly; this refuses nesting past ``max_depth`` with 400 before any parsing.
  V2 inference bodies are exempt: their codec enforces the same cap itself. So are
  artifact and dataset uploads, whatever their ``Content-Type``: they are streamed to
  disk, never parsed as JSON, and may be far larger than any body held in memory. No
  more than ``max_body_bytes`` is ever buffered for the check (413 past it).
  Management bodies (``/api/``) are stored, so they must also be strict JSON (the
  stdlib reads lone surrogates and ``NaN``, which no database takes) whose text holds
  no NUL (``maas.protocols.bounds.json_problem``); job specs have their own parser
  and the same check in their schema.
"""

from __future__ import annotations

import asyncio
import json

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from maas.api.errors import error_response
from maas.api.middleware import _UPLOAD_PATH, on_response_start
from maas.errors import InvalidInput, MaasError, PayloadTooLarge, RequestTimeout
from maas.protocols.bounds import json_problem

__all__ = ["Deadline", "JsonDepthCap"]

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


async def _send_error(scope: Scope, receive: Receive, send: Send, error: MaasError) -> None:
    response = error_response(
        error.status,
        error.code,
        error.message,
        request_id=scope["state"].get("request_id"),
        retry_after=error.retry_after,
        path=scope["path"],
    )
    await response(scope, receive, send)


class Deadline:
    def __init__(self, app: ASGIApp, *, deadline_s: float) -> None:
        self.app = app
        self.deadline_s = deadline_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _UPLOAD_PATH.match(scope["path"]):
            await self.app(scope, receive, send)
            return
        started = False

        def began() -> None:
            nonlocal started
            started = True
            timeout.reschedule(None)  # a stream may go on once it has begun

        try:
            async with asyncio.timeout(self.deadline_s) as timeout:
                await self.app(scope, receive, on_response_start(send, began))
        except TimeoutError:
            if not timeout.expired() or started:
                raise
            error = RequestTimeout(f"the request took longer than {self.deadline_s:g} s")
            await _send_error(scope, receive, send, error)


class JsonDepthCap:
    def __init__(self, app: ASGIApp, *, max_depth: int, max_body_bytes: int) -> None:
        self.app = app
        self.max_depth = max_depth
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            not _is_json_body(scope)
            or scope["path"].startswith("/v2/")
            or _UPLOAD_PATH.match(scope["path"])
        ):
            await self.app(scope, receive, send)
            return
        try:
            body = await _read_body(receive, self.max_body_bytes)
            self._check(body, stored=_is_stored(scope["path"]))
        except MaasError as error:  # also the body-size cap, raised by the receive it wraps
            await _send_error(scope, receive, send, error)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    def _check(self, body: bytes, *, stored: bool) -> None:
        too_deep = InvalidInput(f"JSON nesting exceeds the limit of {self.max_depth} levels")
        try:
            value = orjson.loads(body) if body else None
        except orjson.JSONDecodeError as exc:
            if "depth" in str(exc):  # deeper than orjson's own limit (1024)
                raise too_deep from None
            if stored and _lenient_json(body):
                raise InvalidInput(f"the body is not strict JSON: {exc}") from None
            return  # malformed JSON: the route's own parser explains what is wrong
        if _deeper_than(value, self.max_depth):
            raise too_deep
        problem = json_problem(value) if stored else None
        if problem is not None:
            raise InvalidInput(f"the body cannot be stored: {problem}")


def _is_stored(path: str) -> bool:
    # Job specs are read by orjson and checked by their schema, as ``invalid_spec``.
    return path.startswith("/api/") and not path.startswith("/api/v1/jobs")


def _lenient_json(body: bytes) -> bool:
    """Whether the stdlib reads what orjson refused (so the route would accept it)."""
    try:
        json.loads(body)
    except (ValueError, RecursionError):
        return False
    return True


def _is_json_body(scope: Scope) -> bool:
    if scope["type"] != "http" or scope["method"] not in _BODY_METHODS:
        return False
    for name, value in scope["headers"]:
        if name == b"content-type":
            return b"json" in value.lower()
    return False


async def _read_body(receive: Receive, limit: int) -> bytes:
    """The whole body, or ``PayloadTooLarge`` as soon as it runs past ``limit`` bytes
    (the body cap in front of this is the first guard; this one does not rely on it)."""
    chunks = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _deeper_than(value: object, limit: int) -> bool:
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if not isinstance(item, list):
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in item if isinstance(child, dict | list))
    return False
