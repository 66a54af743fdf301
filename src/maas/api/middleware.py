"""Per-request plumbing kept to one ASGI wrapper: request id, body-size limit, and a
URL without NUL characters (no name, id or filter holds one, and PostgreSQL refuses
them in any text it is asked to compare).

Written as raw ASGI rather than ``BaseHTTPMiddleware`` because it sits on the hot path
of every inference call: no extra task, no request object, no copy of the body.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from maas.api.errors import error_response
from maas.errors import InvalidInput, MaasError, PayloadTooLarge

__all__ = ["RequestPlumbing", "on_response_start"]

_SAFE_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_UPLOAD_PATH = re.compile(r"^/api/v1/(models/[^/]+/versions|datasets)/?$")


class RequestPlumbing:
    """Give each request an id (kept from ``X-Request-ID`` when sent) and cap its body.

    Artifact uploads are capped by the artifact writer instead, which streams to disk.
    """

    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        supplied = _header(scope, b"x-request-id")
        # A caller's id is kept only when it cannot inject anything into logs.
        request_id = supplied if supplied and _SAFE_ID.fullmatch(supplied) else os.urandom(8).hex()
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message["headers"] = headers
            await send(message)

        if "\x00" in scope["path"] or b"%00" in scope["query_string"]:
            error: MaasError = InvalidInput("the URL may not contain NUL characters (%00)")
            await _send(error, scope, receive, send_with_id, request_id)
            return
        limit = None if _UPLOAD_PATH.match(scope["path"]) else self.max_body_bytes
        if limit is not None:
            length = _header(scope, b"content-length")
            if length is not None and length.isdigit() and int(length) > limit:
                error = PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
                await _send(error, scope, receive, send_with_id, request_id)
                return
            receive = _capped(receive, limit)

        await self.app(scope, receive, send_with_id)


async def _send(
    error: MaasError, scope: Scope, receive: Receive, send: Send, request_id: str
) -> None:
    response = error_response(
        error.status, error.code, error.message, request_id=request_id, path=scope["path"]
    )
    await response(scope, receive, send)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _capped(receive: Receive, limit: int) -> Receive:
    seen = 0

    async def capped_receive() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                # Rendered as 413 by the error handlers, like any MaasError.
                raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
        return message

    return capped_receive


def on_response_start(send: Send, began: Callable[[], None]) -> Send:
    """``send``, calling ``began`` when the response starts: a layer that may still
    answer with an error of its own must know whether it is too late to."""

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            began()
        await send(message)

    return sending
