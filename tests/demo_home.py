"""A home with the iris demo (``iris``, ``iris-onnx``) already registered, built once per
test session and copied for each server that needs the demo but does not test its
first start.

Registering the demo trains the classifier, converts it to ONNX and loads it to check
it before moving the alias: seconds of a server start that tests of routes, keys and
limits do not look at. A copy is what any later start of a demo server finds (the demo
registers only what is missing), so the server it serves is the same. Tests of the
first start itself (the minted admin key, the banner) start on an empty home.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

__all__ = ["IRIS_MODELS", "build_demo_home", "copy_home"]

#: The demo models every template holds: the language models are left to their own
#: tests, which start with them (``ALL_DEMO``).
IRIS_MODELS = ["iris", "iris-onnx"]


def build_demo_home(home: Path, admin_key: str) -> Path:
    """Open the services of ``home`` with the iris demo and close them: the same
    ``open_services`` path as ``maas serve --demo`` at its first start."""
    from maas.config import Settings
    from maas.services import open_services

    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, home=home, demo=True, demo_models=IRIS_MODELS, admin_key=admin_key
    )

    async def register() -> None:
        async with open_services(settings):
            pass

    asyncio.run(register())
    return home


def copy_home(template: Path, home: Path) -> Path:
    """``template`` copied to ``home`` (which may exist, empty); returns ``home``."""
    shutil.copytree(template, home, dirs_exist_ok=True)
    return home
