"""Integration fixtures: real servers over loopback, real clients."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from tests.demo_home import copy_home
from tests.integration.server import ALL_DEMO, RunningServer, start_server


@pytest.fixture(scope="session")
def demo_server(
    tmp_path_factory: pytest.TempPathFactory, demo_template: Path
) -> Iterator[RunningServer]:
    """One demo server with the language models (SQLite, embedded defaults) shared by
    read-mostly tests; it registers them on a copy of the session's iris demo."""
    # The first start dequantizes the demo's GGUF chat model: give it time.
    server = start_server(
        copy_home(demo_template, tmp_path_factory.mktemp("demo-home")),
        "--demo",
        env={"MAAS_DEMO_MODELS": ALL_DEMO},
        timeout_s=300,
    )
    yield server
    assert server.stop() in (0, -signal.SIGTERM), "".join(server.output)


@pytest.fixture(scope="session")
def iris_server(
    tmp_path_factory: pytest.TempPathFactory, demo_template: Path
) -> Iterator[RunningServer]:
    """A demo server of the iris models only, for tests that change nothing: the
    language models are loaded only where a test uses them (``demo_server``)."""
    home = copy_home(demo_template, tmp_path_factory.mktemp("iris-home"))
    server = start_server(home, "--demo")
    yield server
    assert server.stop() in (0, -signal.SIGTERM), "".join(server.output)


@pytest.fixture
def fresh_server(tmp_path: Path) -> Iterator[RunningServer]:
    """An empty server of its own, for tests that change the registry."""
    server = start_server(tmp_path / "home")
    yield server
    server.stop()


@pytest.fixture
def iris_onnx(
    tmp_path: Path, iris_model: LogisticRegression, iris: tuple[np.ndarray, np.ndarray]
) -> Path:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    path = tmp_path / "iris.onnx"
    onnx_model = convert_sklearn(
        iris_model,
        initial_types=[("float_input", FloatTensorType([None, 4]))],
        options={id(iris_model): {"zipmap": False}},
    )
    path.write_bytes(onnx_model.SerializeToString())
    return path
