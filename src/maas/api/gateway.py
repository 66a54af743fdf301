"""``Gateway``: the server's ASGI entry, which answers V2 inference past FastAPI.

Every request goes through the same few raw-ASGI layers of ours (the error boundary,
CORS when configured, request id and body cap, the API key, the deadline). Behind
them V2 inference goes straight to its handler (``v2.answer_infer``) and everything
else to the FastAPI app, with its routers, ``/docs`` and exception handlers.

Why not one FastAPI route: on the hot path, FastAPI's own per-request layers (its
error and exception middlewares, body-limit and exit-stack wrappers, matching through
included routers) cost about a sixth of the event loop's CPU per inference, more than
the V2 codec. The FastAPI routes for inference stay, so ``/docs`` documents them.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from maas.api.auth import Authenticator
from maas.api.errors import response_for
from maas.api.hardening import Deadline
from maas.api.middleware import RequestPlumbing, _header, on_response_start
from maas.api.routers.v2 import answer_infer, infer_target
from maas.protocols.v2 import check_media_type
from maas.services import Services

__all__ = ["Gateway"]

log = logging.getLogger("maas.api")


class Gateway:
    """The ASGI application ``maas serve`` runs; ``api`` is the FastAPI app behind it."""

    def __init__(self, api: FastAPI, services: Services) -> None:
        self.api = api
        self.services = services
        settings = services.settings
        stack: ASGIApp = self._dispatch
        stack = Deadline(stack, deadline_s=settings.limits.request_deadline_s)
        stack = Authenticator(
            stack,
            resolver=services.principals,
            audit=services.audit,
            enabled=settings.auth.enabled,
            metrics_public=settings.auth.metrics_public,
            docs_public=settings.auth.docs_public,
        )
        stack = RequestPlumbing(stack, max_body_bytes=settings.limits.max_body_bytes)
        if settings.server.cors_origins:  # outside the key check: preflights carry no key
            stack = CORSMiddleware(
                stack,
                allow_origins=settings.server.cors_origins,
                allow_methods=["*"],
                allow_headers=["Authorization", "X-API-Key", "Content-Type", "X-Request-ID"],
            )
        self._stack = _ErrorBoundary(stack)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":  # nothing to open: the services come opened
            await self.api(scope, receive, send)
            return
        await self._stack(scope, receive, send)

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        target = infer_target(scope)
        if target is None:
            await self.api(scope, receive, send)
        else:
            check_media_type(_header(scope, b"content-type"))  # 415, by the error boundary
            await answer_infer(self.services, scope, receive, send, target)


class _ErrorBoundary:
    """The outermost layer: an exception that escapes everything else (a failing key
    store, say) becomes a JSON 500 with the request id, not a bare server error."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        def began() -> None:
            nonlocal started
            started = True

        try:
            await self.app(scope, receive, on_response_start(send, began))
        except Exception as exc:
            if started:  # too late for an error response: let the server close it
                raise
            request_id = scope.get("state", {}).get("request_id")
            response = response_for(exc, path=scope["path"], request_id=request_id)
            await response(scope, receive, send)
