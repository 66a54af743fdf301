"""The application's start-up, run in process through its ASGI lifespan."""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path
from typing import Any

import pytest

from maas.api.app import create_app
from maas.config import AuthSettings, Settings

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_objects_alive_after_start_up_leave_the_collectors_generations(
    tmp_path: Path,
) -> None:
    """Full collections used to rescan everything start-up made (the p99 of small
    models); after start-up it is frozen, so they scan only what requests allocate."""
    gc.unfreeze()
    settings = Settings(_env_file=None, home=tmp_path, auth=AuthSettings(enabled=False))  # type: ignore[call-arg]
    app = create_app(settings)
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    started = asyncio.Event()

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "lifespan.startup.complete":
            started.set()

    await inbox.put({"type": "lifespan.startup"})
    lifespan = asyncio.ensure_future(app({"type": "lifespan"}, inbox.get, send))
    try:
        await asyncio.wait_for(started.wait(), 60)
        assert gc.get_freeze_count() > 10_000
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        await lifespan
        gc.unfreeze()
