"""XGBoost and LightGBM boosters: recognised by content, described by their objective,
predicting what the library predicts in process; damaged files are 400s."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tests import framework_models as fm

from maas.errors import UnsupportedArtifact
from maas.protocols.signature import TensorSpec
from maas.runtimes.base import LoadOptions
from maas.runtimes.catalog import inspect_artifact, load_runtime

PROBA = [
    TensorSpec(name="predict", datatype="INT64", shape=[-1]),
    TensorSpec(name="predict_proba", datatype="FP64", shape=[-1, 3]),
]
FRAME_INPUTS = ["sepal_length", "sepal_width", "petal_length"]

# (framework, the file's name, its writer, input datatype)
CLASSIFIERS: list[tuple[str, str, Callable[[Path], Path], str]] = [
    ("xgboost", "iris.json", lambda p: fm.write_xgb(fm.xgb_classifier(), p), "FP32"),
    ("xgboost", "iris.ubj", lambda p: fm.write_xgb(fm.xgb_classifier(), p), "FP32"),
    ("lightgbm", "iris.txt", lambda p: fm.write_lgb(fm.lgb_classifier(), p), "FP64"),
]


def _model(framework: str) -> Any:
    return fm.xgb_classifier() if framework == "xgboost" else fm.lgb_classifier()


@pytest.mark.parametrize(("framework", "name", "write", "datatype"), CLASSIFIERS)
def test_a_multiclass_booster_predicts_classes_and_probabilities(
    framework: str, name: str, write: Callable[[Path], Path], datatype: str, tmp_path: Path
) -> None:
    path = write(tmp_path / name)
    info = inspect_artifact(path, "model.bin", trust_pickle=False)  # by content, not name
    assert (info.framework, info.task) == (framework, "classification")
    assert info.signature.inputs == [TensorSpec(name="input", datatype=datatype, shape=[-1, 4])]
    assert info.signature.outputs == PROBA
    features, _ = fm.iris()
    result = load_runtime(framework, path, LoadOptions(threads=1)).predict({"input": features})
    model = _model(framework)
    np.testing.assert_array_equal(result["predict"], model.predict(features))
    np.testing.assert_allclose(result["predict_proba"], model.predict_proba(features), rtol=1e-6)


@pytest.mark.parametrize(
    ("framework", "model", "write"),
    [
        ("xgboost", fm.xgb_binary, fm.write_xgb),
        ("lightgbm", fm.lgb_binary, fm.write_lgb),
    ],
)
def test_a_binary_booster_gives_both_classes_probabilities(
    framework: str, model: Callable[[], Any], write: Callable[[Any, Path], Path], tmp_path: Path
) -> None:
    path = write(model(), tmp_path / ("wine.json" if framework == "xgboost" else "wine.txt"))
    runtime = load_runtime(framework, path, LoadOptions(threads=1))
    assert runtime.signature.output("predict_proba") == TensorSpec(
        name="predict_proba", datatype="FP64", shape=[-1, 2]
    )
    features, _ = fm.wine()
    result = runtime.predict({"input": features})
    np.testing.assert_array_equal(result["predict"], model().predict(features))
    np.testing.assert_allclose(result["predict_proba"], model().predict_proba(features), rtol=1e-6)


@pytest.mark.parametrize(
    ("framework", "model", "write", "datatype"),
    [
        ("xgboost", fm.xgb_frame_regressor, fm.write_xgb, "FP32"),
        ("lightgbm", fm.lgb_frame_regressor, fm.write_lgb, "FP64"),
    ],
)
def test_a_booster_fitted_on_a_dataframe_takes_one_input_per_column(
    framework: str,
    model: Callable[[], Any],
    write: Callable[[Any, Path], Path],
    datatype: str,
    tmp_path: Path,
) -> None:
    path = write(model(), tmp_path / ("r.json" if framework == "xgboost" else "r.txt"))
    info = inspect_artifact(path, path.name, trust_pickle=False)
    assert info.task == "regression"
    assert info.signature.inputs == [
        TensorSpec(name=name, datatype=datatype, shape=[-1, 1]) for name in FRAME_INPUTS
    ]
    assert info.signature.outputs == [TensorSpec(name="predict", datatype="FP64", shape=[-1])]
    frame = fm.iris_frame()[FRAME_INPUTS]
    columns = {name: frame[name].to_numpy().reshape(-1, 1) for name in FRAME_INPUTS}
    result = load_runtime(framework, path, LoadOptions(threads=1)).predict(columns)
    np.testing.assert_allclose(result["predict"], model().predict(frame), rtol=1e-6)


@pytest.mark.parametrize(("framework", "name", "write", "datatype"), CLASSIFIERS)
def test_a_truncated_booster_is_a_400(
    framework: str, name: str, write: Callable[[Path], Path], datatype: str, tmp_path: Path
) -> None:
    path = write(tmp_path / name)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UnsupportedArtifact) as caught:
        inspect_artifact(path, name, trust_pickle=False)
    assert caught.value.status == 400
    assert framework.replace("xgboost", "XGBoost").replace("lightgbm", "LightGBM") in str(
        caught.value
    )


def test_a_reformatted_json_booster_is_still_recognised(tmp_path: Path) -> None:
    import json

    path = fm.write_xgb(fm.xgb_classifier(), tmp_path / "iris.json")
    path.write_text(json.dumps(json.loads(path.read_text()), indent=2))
    assert inspect_artifact(path, "iris.json", trust_pickle=False).framework == "xgboost"


def test_json_that_is_no_booster_is_not_taken_for_one(tmp_path: Path) -> None:
    path = tmp_path / "data.json"
    path.write_text('{"learning": {"rate": 0.1}}')
    with pytest.raises(UnsupportedArtifact, match="unrecognised model file"):
        inspect_artifact(path, "data.json", trust_pickle=False)
