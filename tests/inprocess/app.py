"""The whole server in the test's own process: services opened by the test and handed
to ``create_app``, called over ``httpx.ASGITransport`` (no socket, no subprocess).

For what needs no real socket: routers, auth, error shapes, the OpenAI shapes. What
does (drain, signals, worker processes' lifecycle, TLS, the clients' own transports)
stays in ``tests/integration``, against ``maas serve`` in a subprocess.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from maas.api.app import create_app
from maas.api.gateway import Gateway
from maas.config import Settings
from maas.services import Services, open_services

__all__ = ["TEST_ADMIN_KEY", "InProcess", "in_process"]

TEST_ADMIN_KEY = "maas_testtest_" + "0123456789abcdef" * 2


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
    ``TEST_ADMIN_KEY`` unless auth is off) and the app over them."""
    settings.setdefault("admin_key", TEST_ADMIN_KEY)
    built = Settings(_env_file=None, home=home, **settings)  # type: ignore[call-arg]
    async with open_services(built) as services:
        await services.models.wait_loaded()  # as a started server is once it is ready
        key = TEST_ADMIN_KEY if built.auth.enabled else None
        yield InProcess(services, create_app(services), key)
