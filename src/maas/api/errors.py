"""The only place that turns exceptions into HTTP responses.

maas and V2 routes answer ``{"error": message, "code", "details", "request_id"}`` (the
``error`` string keeps V2 clients working). The OpenAI routes (``/v1/…``, and rerank
on every path) answer in OpenAI's shape, ``{"error": {"message", "type", "param",
"code"}}``, so the official SDK raises its own typed errors; the code is the same
stable maas code either way. 5xx bodies carry a generic message and the request id,
never exception text; the traceback goes to the log under the same id.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import Match

from maas.errors import InvalidRequest, MaasError, QuotaExceeded, RateLimited
from maas.observability.metrics import UNAVAILABLE

__all__ = [
    "error_body",
    "error_body_for",
    "error_response",
    "install_error_handlers",
    "is_openai_path",
    "request_id_of",
    "response_for",
]

log = logging.getLogger("maas.api")

_STATUS_CODES = {
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


#: OpenAI's error ``type`` for each status (what its SDK and its users branch on).
_OPENAI_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    429: "rate_limit_error",
}


#: vLLM's other rerank paths answer errors in OpenAI's shape, as its /v1 routes do.
_OPENAI_ALSO = frozenset({"/rerank", "/v2/rerank"})


def is_openai_path(path: str) -> bool:
    return path.startswith("/v1/") or path in _OPENAI_ALSO


def _openai_type(status: int, code: str) -> str:
    if code == "quota_exceeded":
        return "insufficient_quota"
    if status >= 500:
        return "server_error"
    return _OPENAI_TYPES.get(status, "invalid_request_error")


def request_id_of(request: Request) -> str | None:
    request_id = request.scope.get("state", {}).get("request_id")
    return str(request_id) if request_id is not None else None


_request_id = request_id_of


def error_body(
    status: int,
    code: str,
    message: str,
    *,
    details: dict[str, Any] | None = None,
    request_id: str | None = None,
    path: str = "",
) -> dict[str, Any]:
    """The error document for ``path``: OpenAI's shape under ``/v1/``, maas's elsewhere.
    Also the last event of an OpenAI stream that fails once it has begun."""
    body: dict[str, Any]
    if is_openai_path(path):
        param = (details or {}).get("param")
        error = {"message": message, "type": _openai_type(status, code), "param": param}
        body = {"error": {**error, "code": code}}
    else:
        body = {"error": message, "code": code}
        if details:
            body["details"] = details
    if request_id:
        body["request_id"] = request_id
    return body


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    details: dict[str, Any] | None = None,
    request_id: str | None = None,
    retry_after: float | None = None,
    headers: dict[str, str] | None = None,
    path: str = "",
) -> Response:
    """The error response for ``path`` (``error_body``), with ``Retry-After``."""
    body = error_body(status, code, message, details=details, request_id=request_id, path=path)
    headers = dict(headers or {})
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, round(retry_after + 0.499)))
    return Response(
        orjson.dumps(body), status_code=status, media_type="application/json", headers=headers
    )


_INTERNAL = "internal server error; the server log has details under this request id"


def _logged(exc: Exception, request_id: str | None) -> MaasError | None:
    """``exc`` as a ``MaasError``, or None for anything else (a 500); logged either way
    when it is the server's fault."""
    if not isinstance(exc, MaasError):
        log.exception("unhandled error (request %s)", request_id, exc_info=exc)
        return None
    if exc.status == HTTPStatus.SERVICE_UNAVAILABLE:
        # A moment's unavailability (a worker crash, a drain, a full queue) fails many
        # requests at once: its cause logs the event once, each request is a count.
        UNAVAILABLE.labels(exc.code).inc()
    elif exc.status >= 500:
        log.error("%s: %s (request %s)", exc.code, exc.message, request_id)
    return exc


def error_body_for(exc: Exception, *, path: str, request_id: str | None) -> dict[str, Any]:
    """``response_for``'s body alone: for an error that comes after the response began
    (an event of a stream), rendered as every other error is."""
    error = _logged(exc, request_id)
    if error is None:
        return error_body(
            HTTPStatus.INTERNAL_SERVER_ERROR, MaasError.code, _INTERNAL,
            request_id=request_id, path=path,
        )  # fmt: skip
    return error_body(
        error.status, error.code, error.message,
        details=error.details, request_id=request_id, path=path,
    )  # fmt: skip


def response_for(exc: Exception, *, path: str, request_id: str | None) -> Response:
    """The answer to an exception raised while handling a request: a ``MaasError``
    with its status and code, anything else a 500 whose details go to the log only."""
    error = _logged(exc, request_id)
    if error is None:
        return error_response(
            HTTPStatus.INTERNAL_SERVER_ERROR,
            MaasError.code,
            _INTERNAL,
            request_id=request_id,
            path=path,
        )
    exc = error
    return error_response(
        exc.status,
        exc.code,
        exc.message,
        details=exc.details,
        request_id=request_id,
        retry_after=exc.retry_after,
        headers=_rate_limit_headers(exc),
        path=path,
    )


async def _maas_error(request: Request, exc: Exception) -> Response:
    return response_for(exc, path=request.url.path, request_id=_request_id(request))


def _rate_limit_headers(exc: MaasError) -> dict[str, str] | None:
    """429s of ``maas.auth.admission`` carry their limit in ``details``; echo it as
    ``X-RateLimit-*`` headers, as on the key's successful responses."""
    if not isinstance(exc, RateLimited | QuotaExceeded) or "limit" not in exc.details:
        return None
    return {
        f"X-RateLimit-{name}": str(exc.details[field])
        for name, field in (("Limit", "limit"), ("Remaining", "remaining"), ("Reset", "reset_s"))
    }


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    problems = [
        {"loc": [str(p) for p in err.get("loc", ())], "msg": err.get("msg", "")}
        for err in exc.errors()
    ]
    first = problems[0] if problems else {"loc": [], "msg": "invalid request"}
    location = ".".join(first["loc"])
    message = f"{location}: {first['msg']}" if location else str(first["msg"])
    return error_response(
        HTTPStatus.BAD_REQUEST,
        InvalidRequest.code,
        message,
        details={"errors": problems, "param": location or None},
        request_id=_request_id(request),
        path=request.url.path,
    )


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code = _STATUS_CODES.get(exc.status_code, "http_error")
    headers = dict(exc.headers or {})
    if exc.status_code == HTTPStatus.METHOD_NOT_ALLOWED:
        headers["Allow"] = _allowed_methods(request)
    return error_response(
        exc.status_code,
        code,
        str(exc.detail),
        request_id=_request_id(request),
        headers=headers,
        path=request.url.path,
    )


def _allowed_methods(request: Request) -> str:
    """Every method some route takes at this path (RFC 9110 requires ``Allow`` on a
    405). Starlette names only the first route that matched the path, while FastAPI
    declares each method of a path (``GET`` and ``POST /api/v1/keys``) as a route of
    its own, so each method is tried against the app's routes."""
    routes = request.app.router.routes
    allowed = [
        method
        for method in _METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes
        )
    ]
    return ", ".join(allowed)


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(MaasError, _maas_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _maas_error)
