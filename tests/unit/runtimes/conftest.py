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


@pytest.fixture
def iris_xgboost(tmp_path: Path) -> Path:
    from tests import framework_models as fm

    return fm.write_xgb(fm.xgb_classifier(), tmp_path / "iris.ubj")


@pytest.fixture
def iris_lightgbm(tmp_path: Path) -> Path:
    from tests import framework_models as fm

    return fm.write_lgb(fm.lgb_classifier(), tmp_path / "iris.txt")


@pytest.fixture
def mlp_export(tmp_path: Path) -> Path:
    from tests import framework_models as fm

    return fm.write_export(tmp_path / "mlp.pt2")


@pytest.fixture
def mlp_torchscript(tmp_path: Path) -> Path:
    from tests import framework_models as fm

    return fm.write_torchscript(tmp_path / "mlp.pt")


@pytest.fixture
def mlp_keras(tmp_path: Path) -> Path:
    from tests import framework_models as fm

    return fm.write_keras(tmp_path / "mlp.keras")
