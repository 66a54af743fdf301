"""In-process fixtures: one demo (iris, iris-onnx) per test module, opened in process."""

from __future__ import annotations

from collections.abc import AsyncIterator

import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from tests.inprocess.app import InProcess, in_process


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def demo(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[InProcess]:
    async with in_process(
        tmp_path_factory.mktemp("inprocess-demo"), demo=True, demo_models=["iris", "iris-onnx"]
    ) as served:
        yield served


@pytest.fixture(scope="session")
def iris() -> tuple[np.ndarray, np.ndarray]:
    features, labels = load_iris(return_X_y=True)
    return features, labels


@pytest.fixture(scope="session")
def iris_model(iris: tuple[np.ndarray, np.ndarray]) -> LogisticRegression:
    """What the demo trains: the same data and estimator, so the same classes."""
    features, labels = iris
    return LogisticRegression(max_iter=1000).fit(features, labels)
