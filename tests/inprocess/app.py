"""The whole server in the test's own process: services opened by the test and handed
to ``create_app``, called over ``httpx.ASGITransport`` (no socket, no subprocess).

Two ways to hold it: ``in_process`` for async tests (``httpx.AsyncClient`` on the
test's loop), and ``serving`` for plain tests, which runs the services on a loop of its
own in a thread and hands out a synchronous ``httpx.Client`` whose transport runs each
request there; it reads like ``RunningServer`` (``client()``, ``api_key``, ``output``),
so a test of routes reads the same whichever way it reaches them.

For what needs no real socket: routers, auth, error shapes, the OpenAI shapes. What
does (drain, signals, worker processes' lifecycle, TLS, the clients' own transports)
stays in ``tests/integration``, against ``maas serve`` in a subprocess.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from anyio.from_thread import BlockingPortal, start_blocking_portal

from maas.api.app import create_app
from maas.api.gateway import Gateway
from maas.config import Settings
from maas.services import Services, open_services
from tests.conftest import TEST_ADMIN_KEY

__all__ = ["TEST_ADMIN_KEY", "InProcess", "InProcessServer", "in_process", "serving"]


@dataclass
class InProcess:
    services: Services
    app: Gateway
    api_key: str | None

    @property
    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        """httpx over the app with the admin key; pass ``headers={}`` for none."""
        kwargs.setdefault("headers", self.auth_headers)
        transport = httpx.ASGITransport(app=self.app, client=("127.0.0.1", 5000))
        return httpx.AsyncClient(transport=transport, base_url="http://maas.test", **kwargs)


@asynccontextmanager
async def in_process(home: Path, **settings: Any) -> AsyncIterator[InProcess]:
    """Open the services of ``Settings(home=home, **settings)`` (admin key
    ``TEST_ADMIN_KEY`` unless auth is off) and the app over them.

    Models run in threads of the test's process unless ``serving`` says otherwise: a
    worker process for the iris demo costs 2 CPU-s to start (scikit-learn's import), in
    each of some twenty servers, and what this tier tests is in front of the model. The
    worker processes are tested where they run: ``tests/unit/serving`` and
    ``tests/integration``."""
    settings.setdefault("admin_key", TEST_ADMIN_KEY)
    settings["serving"] = {"worker_mode": "threads", **settings.get("serving", {})}
    built = Settings(_env_file=None, home=home, **settings)  # type: ignore[call-arg]
    async with open_services(built) as services:
        await services.models.wait_loaded()  # as a started server is once it is ready
        key = TEST_ADMIN_KEY if built.auth.enabled else None
        yield InProcess(services, create_app(services), key)


@dataclass
class InProcessServer:
    """Services and app on a loop thread, for synchronous tests (see ``serving``)."""

    served: InProcess
    portal: BlockingPortal
    home: Path
    #: The log lines written while it ran, as ``maas serve`` prints them.
    output: list[str] = field(default_factory=list)

    @property
    def services(self) -> Services:
        return self.served.services

    @property
    def api_key(self) -> str | None:
        return self.served.api_key

    @property
    def auth_headers(self) -> dict[str, str]:
        return self.served.auth_headers

    def client(self, **kwargs: Any) -> httpx.Client:
        """httpx with the admin key; pass ``headers={}`` for a caller without one."""
        kwargs.setdefault("headers", self.auth_headers)
        asgi = httpx.ASGITransport(app=self.served.app, client=("127.0.0.1", 5000))
        transport = _PortalTransport(self.portal, asgi)
        return httpx.Client(transport=transport, base_url="http://maas.test", **kwargs)

    def call(self, fn: Any, *args: Any) -> Any:
        """Await ``fn(*args)`` on the services' loop (their state is bound to it)."""
        return self.portal.call(fn, *args)


@contextmanager
def serving(home: Path, **settings: Any) -> Iterator[InProcessServer]:
    """``in_process(home, **settings)`` on a loop of its own, for synchronous tests;
    log records at INFO and above are kept in ``output`` while it runs."""
    lines: list[str] = []
    handler = _ListHandler(lines)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO if level > logging.INFO else level)
    try:
        with (
            start_blocking_portal("asyncio") as portal,
            portal.wrap_async_context_manager(in_process(home, **settings)) as served,
        ):
            yield InProcessServer(served, portal, home, lines)
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


class _ListHandler(logging.Handler):
    def __init__(self, lines: list[str]) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        self.lines = lines

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record) + "\n")


class _PortalTransport(httpx.BaseTransport):
    """A synchronous transport that runs each request through ``httpx.ASGITransport``
    on the portal's loop, the request body in the chunks the caller sent."""

    def __init__(self, portal: BlockingPortal, asgi: httpx.ASGITransport) -> None:
        self.portal = portal
        self.asgi = asgi

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.SyncByteStream)
        chunks = list(request.stream)
        response: httpx.Response = self.portal.call(self._send, request, chunks)
        return response

    async def _send(self, request: httpx.Request, chunks: list[bytes]) -> httpx.Response:
        sent = httpx.Request(
            request.method,
            request.url,
            headers=request.headers,
            stream=_Chunks(chunks),
            extensions=request.extensions,
        )
        answer = await self.asgi.handle_async_request(sent)
        body = b"".join([part async for part in answer.stream])  # type: ignore[union-attr]
        return httpx.Response(
            answer.status_code,
            headers=answer.headers,
            stream=httpx.ByteStream(body),
            extensions=answer.extensions,
        )


class _Chunks(httpx.AsyncByteStream):
    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk
