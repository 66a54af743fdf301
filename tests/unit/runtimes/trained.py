"""Tiny real models trained in process and written as the files users upload.

Shared by the runtime and serving tests; each writer returns the path it wrote.
"""

from __future__ import annotations

import pickle
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import skops.io
from numpy.typing import NDArray
from sklearn.datasets import load_iris
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.tree import DecisionTreeClassifier


@cache
def iris() -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    features, labels = load_iris(return_X_y=True)
    return features, labels


@cache
def iris_classifier() -> LogisticRegression:
    features, labels = iris()
    return LogisticRegression(max_iter=1000).fit(features, labels)


@cache
def species_classifier() -> DecisionTreeClassifier:
    """A classifier whose labels are strings, so its ``predict`` output is BYTES."""
    features, labels = iris()
    names = np.array(["setosa", "versicolor", "virginica"])[labels]
    return DecisionTreeClassifier(max_depth=3, random_state=0).fit(features, names)


@cache
def regressor() -> LinearRegression:
    features, _ = iris()
    return LinearRegression().fit(features[:, :3], features[:, 3])


def write_skops(estimator: Any, path: Path) -> Path:
    skops.io.dump(estimator, path)
    return path


def write_pickle(estimator: Any, path: Path) -> Path:
    path.write_bytes(pickle.dumps(estimator, protocol=5))
    return path


def write_onnx(estimator: Any, path: Path, n_features: int = 4) -> Path:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    onnx_model = convert_sklearn(
        estimator,
        initial_types=[("float_input", FloatTensorType([None, n_features]))],
        options={id(estimator): {"zipmap": False}},
    )
    path.write_bytes(onnx_model.SerializeToString())
    return path
