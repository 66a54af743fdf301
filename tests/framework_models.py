"""Tiny real XGBoost, LightGBM, PyTorch and Keras models, trained in process and
written as the files users upload. Shared by the runtime unit tests and the integration tests."""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.datasets import load_iris, load_wine

os.environ["KERAS_BACKEND"] = "torch"  # before anything imports keras, as the runtime does

IRIS_COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


@cache
def iris() -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    features, labels = load_iris(return_X_y=True)
    return features, labels


@cache
def wine() -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """13 features, 3 classes; the binary tasks take class 0 against the rest."""
    features, labels = load_wine(return_X_y=True)
    return features, labels


def iris_frame() -> Any:
    import pandas as pd

    return pd.DataFrame(iris()[0], columns=IRIS_COLUMNS)


# -- XGBoost --------------------------------------------------------------------------


@cache
def xgb_classifier() -> Any:
    import xgboost

    features, labels = iris()
    return xgboost.XGBClassifier(n_estimators=8, max_depth=2, n_jobs=1).fit(features, labels)


@cache
def xgb_binary() -> Any:
    import xgboost

    features, labels = wine()
    model = xgboost.XGBClassifier(n_estimators=8, max_depth=2, n_jobs=1)
    return model.fit(features, (labels == 0).astype(int))


@cache
def xgb_frame_regressor() -> Any:
    """Fitted on a DataFrame: the booster keeps its column names."""
    import xgboost

    frame = iris_frame()
    model = xgboost.XGBRegressor(n_estimators=8, max_depth=2, n_jobs=1)
    return model.fit(frame[IRIS_COLUMNS[:3]], frame[IRIS_COLUMNS[3]])


def write_xgb(model: Any, path: Path) -> Path:
    model.save_model(path)  # the suffix chooses JSON or UBJSON
    return path


# -- LightGBM -------------------------------------------------------------------------


@cache
def lgb_classifier() -> Any:
    import lightgbm

    features, labels = iris()
    model = lightgbm.LGBMClassifier(n_estimators=8, num_leaves=4, n_jobs=1, verbose=-1)
    return model.fit(features, labels)


@cache
def lgb_binary() -> Any:
    import lightgbm

    features, labels = wine()
    model = lightgbm.LGBMClassifier(n_estimators=8, num_leaves=4, n_jobs=1, verbose=-1)
    return model.fit(features, (labels == 0).astype(int))


@cache
def lgb_frame_regressor() -> Any:
    import lightgbm

    frame = iris_frame()
    model = lightgbm.LGBMRegressor(n_estimators=8, num_leaves=4, n_jobs=1, verbose=-1)
    return model.fit(frame[IRIS_COLUMNS[:3]], frame[IRIS_COLUMNS[3]])


def write_lgb(model: Any, path: Path) -> Path:
    model.booster_.save_model(str(path))
    return path


# -- PyTorch --------------------------------------------------------------------------


@cache
def torch_mlp() -> Any:
    """A 2-layer MLP for iris (4 -> 8 -> 3); its weights are seeded, not trained."""
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)).eval()


def write_export(path: Path, *, dynamic: bool = True) -> Path:
    import torch

    example = (torch.zeros(5, 4),)
    shapes = ({0: torch.export.Dim("batch")},) if dynamic else None
    program = torch.export.export(torch_mlp(), example, dynamic_shapes=shapes)
    torch.export.save(program, str(path))
    return path


def write_torchscript(path: Path) -> Path:
    import torch

    torch.jit.save(torch.jit.script(torch_mlp()), str(path))
    return path


def write_state_dict(path: Path) -> Path:
    import torch

    torch.save(torch_mlp().state_dict(), str(path))
    return path


#: The signature a TorchScript push declares (its file records none).
TORCHSCRIPT_SIGNATURE = {
    "inputs": [{"name": "features", "datatype": "FP32", "shape": [-1, 4]}],
    "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 3]}],
}


def torch_predict(features: NDArray[Any]) -> NDArray[np.float32]:
    import torch

    with torch.inference_mode():
        result: NDArray[np.float32] = torch_mlp()(
            torch.from_numpy(features.astype(np.float32))
        ).numpy()
        return result


# -- Keras ----------------------------------------------------------------------------


@cache
def keras_model() -> Any:
    import keras

    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((4,), name="features"),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )


def write_keras(path: Path) -> Path:
    keras_model().save(str(path))
    return path


def write_keras_lambda(path: Path) -> Path:
    import keras

    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Lambda(lambda t: t * 2), keras.layers.Dense(2)]
    )
    model.save(str(path))
    return path


def keras_predict(features: NDArray[Any]) -> NDArray[np.float32]:
    result: NDArray[np.float32] = keras_model().predict(features.astype(np.float32), verbose=0)
    return result
