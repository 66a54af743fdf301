"""``create_app(settings)``: the ASGI application; its lifespan opens the services.

There is no module-level app: tests and ``maas serve`` each build their own from
explicit settings.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from maas import __version__
from maas.api.auth import Authenticator
from maas.api.errors import install_error_handlers
from maas.api.hardening import Deadline, JsonDepthCap
from maas.api.middleware import RequestPlumbing
from maas.api.routers import (
    audit,
    datasets,
    deployments,
    health,
    jobs,
    keys,
    metrics,
    models,
    openai,
    usage,
    v2,
)
from maas.config import Settings
from maas.services import Services, open_services

__all__ = ["create_app"]

_DESCRIPTION = """
Self-hosted Model-as-a-Service.

* **KServe V2** inference under `/v2` (JSON and Triton's binary tensor extension).
* **OpenAI API** under `/v1`: models, chat completions (SSE streaming), completions,
  embeddings; use the official `openai` SDK with `base_url=<server>/v1`.
* **Management** of models, versions and aliases under `/api/v1`.

Errors are `{"error": message, "code": stable_code}`.
"""


def create_app(
    settings: Settings, *, on_started: Callable[[Services], None] | None = None
) -> FastAPI:
    """Build the app; ``on_started`` runs once the services are open (``maas serve``'s banner)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_services(settings) as services:
            app.state.services = services
            if on_started is not None:
                on_started(services)
            yield

    app = FastAPI(
        title="maas",
        version=__version__,
        description=_DESCRIPTION,
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    install_error_handlers(app)
    for router in (health.router, v2.router, models.router, usage.router, deployments.router):
        app.include_router(router)
    for router in (keys.router, audit.router, metrics.router, openai.router):
        app.include_router(router)
    for router in (datasets.router, jobs.router):
        app.include_router(router)
    app.router.routes[:0] = v2.FAST_ROUTES  # matched before FastAPI's (see v2.FAST_ROUTES)
    # Added innermost first: plumbing (request id, body cap) → auth → deadline → JSON depth.
    app.add_middleware(JsonDepthCap, max_depth=settings.limits.max_json_depth)
    app.add_middleware(Deadline, deadline_s=settings.limits.request_deadline_s)
    app.add_middleware(
        Authenticator,
        enabled=settings.auth.enabled,
        metrics_public=settings.auth.metrics_public,
        docs_public=settings.auth.docs_public,
    )
    app.add_middleware(RequestPlumbing, max_body_bytes=settings.limits.max_body_bytes)
    if settings.server.cors_origins:  # outermost: preflight requests carry no key
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.server.cors_origins,
            allow_methods=["*"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type", "X-Request-ID"],
        )
    return app
