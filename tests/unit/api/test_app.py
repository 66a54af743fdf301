"""The application's start-up, run in process through its ASGI lifespan."""

from __future__ import annotations

import gc
import warnings
from pathlib import Path

import pytest

from maas.api.app import create_app, freeze_startup_objects
from maas.config import AuthSettings, Settings
from maas.services import open_services
from maas.serving import heap

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_objects_alive_after_start_up_leave_the_collectors_generations(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Full collections used to rescan everything start-up made (the p99 of small
    models); after start-up it is frozen, so they scan only what requests allocate."""
    # freeze_startup_objects collects everything first: garbage earlier tests in this
    # process left (a database connection their teardown dropped unclosed, say) would
    # warn here, in a test of something else. Collect it before, without its warnings.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
    gc.unfreeze()
    # Freezing after each load stays this test's: the process runs other tests after it.
    monkeypatch.setattr(heap, "_enabled", False)
    settings = Settings(_env_file=None, home=tmp_path, auth=AuthSettings(enabled=False))  # type: ignore[call-arg]
    try:
        async with open_services(settings) as services:
            create_app(services)
            freeze_startup_objects()
            assert gc.get_freeze_count() > 10_000
    finally:
        gc.unfreeze()
