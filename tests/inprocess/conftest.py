"""In-process fixtures: one demo (iris, iris-onnx) per test module, opened in process:
``demo`` for async tests, ``demo_server`` for plain ones."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.demo_home import IRIS_MODELS, copy_home
from tests.inprocess.app import InProcess, InProcessServer, in_process, serving


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def demo(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[InProcess]:
    async with in_process(
        tmp_path_factory.mktemp("inprocess-demo"), demo=True, demo_models=["iris", "iris-onnx"]
    ) as served:
        yield served


@pytest.fixture(scope="module")
def demo_server(
    tmp_path_factory: pytest.TempPathFactory, demo_template: Path
) -> Iterator[InProcessServer]:
    """The iris demo on a home of the module's own (a copy of the session's template)."""
    home = copy_home(demo_template, tmp_path_factory.mktemp("inprocess-demo"))
    with serving(home, demo=True, demo_models=IRIS_MODELS) as served:
        yield served
