"""Runtime fixtures: real model files in ``tmp_path``, one per format and task."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.unit.runtimes import trained


@pytest.fixture
def iris_skops(tmp_path: Path) -> Path:
    return trained.write_skops(trained.iris_classifier(), tmp_path / "iris.skops")


@pytest.fixture
def iris_onnx(tmp_path: Path) -> Path:
    return trained.write_onnx(trained.iris_classifier(), tmp_path / "iris.onnx")


@pytest.fixture
def iris_pickle(tmp_path: Path) -> Path:
    return trained.write_pickle(trained.iris_classifier(), tmp_path / "iris.pkl")


@pytest.fixture
def species_skops(tmp_path: Path) -> Path:
    return trained.write_skops(trained.species_classifier(), tmp_path / "species.skops")


@pytest.fixture
def species_onnx(tmp_path: Path) -> Path:
    return trained.write_onnx(trained.species_classifier(), tmp_path / "species.onnx")


@pytest.fixture
def regressor_skops(tmp_path: Path) -> Path:
    return trained.write_skops(trained.regressor(), tmp_path / "regressor.skops")
