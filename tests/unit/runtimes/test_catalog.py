"""Detection and safe loading (``catalog.inspect_artifact``), and input checks."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import skops.io
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer
from tests.unit.runtimes import trained

from maas.errors import (
    InvalidInput,
    ShapeMismatch,
    UnsupportedArtifact,
    UntrustedArtifact,
)
from maas.protocols.signature import TensorSpec
from maas.runtimes.base import LoadOptions, Runtime
from maas.runtimes.catalog import inspect_artifact, load_runtime, runtime_class

Classifier = tuple[Runtime, str]  # a loaded iris runtime and the name of its input


def double(values: np.ndarray) -> np.ndarray:
    """A user function: skops must not trust it."""
    return values * 2


def test_skops_classifier(iris_skops: Path) -> None:
    info = inspect_artifact(iris_skops, "iris.skops", trust_pickle=False)
    assert (info.framework, info.task) == ("sklearn", "classification")
    assert info.details == {"estimator": "LogisticRegression"}
    assert info.signature.inputs == [TensorSpec(name="input", datatype="FP64", shape=[-1, 4])]
    assert info.signature.outputs == [
        TensorSpec(name="predict", datatype="INT64", shape=[-1]),
        TensorSpec(name="predict_proba", datatype="FP64", shape=[-1, 3]),
    ]


def test_skops_regressor(regressor_skops: Path) -> None:
    info = inspect_artifact(regressor_skops, "r.skops", trust_pickle=False)
    assert (info.framework, info.task) == ("sklearn", "regression")
    assert info.signature.inputs == [TensorSpec(name="input", datatype="FP64", shape=[-1, 3])]
    assert info.signature.outputs == [TensorSpec(name="predict", datatype="FP64", shape=[-1])]


def test_onnx_classifier(iris_onnx: Path) -> None:
    info = inspect_artifact(iris_onnx, "iris.onnx", trust_pickle=False)
    assert info.framework == "onnx"
    assert info.signature.inputs == [TensorSpec(name="float_input", datatype="FP32", shape=[-1, 4])]
    assert info.signature.outputs == [
        TensorSpec(name="label", datatype="INT64", shape=[-1]),
        TensorSpec(name="probabilities", datatype="FP32", shape=[-1, 3]),
    ]


def test_onnx_is_detected_by_content_not_extension(iris_onnx: Path) -> None:
    assert inspect_artifact(iris_onnx, "model.bin", trust_pickle=False).framework == "onnx"


def test_skops_and_onnx_predict_what_sklearn_predicts(iris_skops: Path, iris_onnx: Path) -> None:
    features, _ = trained.iris()
    expected = trained.iris_classifier().predict(features)
    skops_rt = load_runtime("sklearn", iris_skops, LoadOptions())
    onnx_rt = load_runtime("onnx", iris_onnx, LoadOptions())
    np.testing.assert_array_equal(skops_rt.predict({"input": features})["predict"], expected)
    onnx_labels = onnx_rt.predict({"float_input": features.astype(np.float32)})["label"]
    np.testing.assert_array_equal(onnx_labels, expected)


def test_string_labels_come_back_as_bytes(species_skops: Path, species_onnx: Path) -> None:
    features, _ = trained.iris()
    expected = [s.encode() for s in trained.species_classifier().predict(features[:5])]
    for runtime, name in (
        (load_runtime("sklearn", species_skops, LoadOptions()), "input"),
        (load_runtime("onnx", species_onnx, LoadOptions()), "float_input"),
    ):
        spec = runtime.signature.outputs[0]
        assert spec.datatype == "BYTES"
        labels = runtime.predict({name: features[:5].astype(np.float32)}, [spec.name])[spec.name]
        assert labels.dtype == object
        assert labels.tolist() == expected


def test_pickle_needs_trust(iris_pickle: Path) -> None:
    with pytest.raises(UntrustedArtifact):
        inspect_artifact(iris_pickle, "iris.pkl", trust_pickle=False)
    with pytest.raises(UntrustedArtifact):
        load_runtime("pickle", iris_pickle, LoadOptions())
    info = inspect_artifact(iris_pickle, "iris.pkl", trust_pickle=True)
    assert (info.framework, info.task) == ("pickle", "classification")


def test_pickle_is_detected_without_its_extension(iris_pickle: Path) -> None:
    with pytest.raises(UntrustedArtifact):
        inspect_artifact(iris_pickle, "model.bin", trust_pickle=False)


def test_skops_with_a_user_function_is_refused(tmp_path: Path) -> None:
    features, labels = trained.iris()
    pipeline = make_pipeline(FunctionTransformer(double), trained.iris_classifier())
    pipeline.fit(features, labels)
    path = tmp_path / "custom.skops"
    skops.io.dump(pipeline, path)
    with pytest.raises(UntrustedArtifact) as caught:
        inspect_artifact(path, "custom.skops", trust_pickle=False)
    assert any("double" in name for name in caught.value.details["types"])


@pytest.mark.parametrize("filename", ["model.onnx", "model.skops", "model.bin"])
def test_garbage_is_unsupported(tmp_path: Path, filename: str) -> None:
    path = tmp_path / filename
    path.write_bytes(b"this is not a model, just some text\n" * 10)
    with pytest.raises(UnsupportedArtifact):
        inspect_artifact(path, filename, trust_pickle=True)


@pytest.mark.parametrize("filename", ["model.onnx", "model.bin"])
def test_truncated_onnx_is_unsupported(iris_onnx: Path, tmp_path: Path, filename: str) -> None:
    path = tmp_path / filename
    path.write_bytes(iris_onnx.read_bytes()[: iris_onnx.stat().st_size // 2])
    with pytest.raises(UnsupportedArtifact):
        inspect_artifact(path, filename, trust_pickle=False)


def test_truncated_skops_is_unsupported(iris_skops: Path, tmp_path: Path) -> None:
    path = tmp_path / "cut.skops"
    path.write_bytes(iris_skops.read_bytes()[:-100])
    with pytest.raises(UnsupportedArtifact):
        inspect_artifact(path, "cut.skops", trust_pickle=False)


def test_unknown_framework_is_unsupported() -> None:
    with pytest.raises(UnsupportedArtifact):
        runtime_class("nope")


@pytest.fixture(params=["sklearn", "onnx"])
def classifier(request: pytest.FixtureRequest, iris_skops: Path, iris_onnx: Path) -> Classifier:
    path = iris_skops if request.param == "sklearn" else iris_onnx
    runtime = load_runtime(request.param, path, LoadOptions())
    return runtime, runtime.signature.inputs[0].name


@pytest.mark.parametrize("shape", [(4,), (2, 3), (2, 5), (1, 2, 4)])
def test_wrong_shape(classifier: Classifier, shape: tuple[int, ...]) -> None:
    runtime, name = classifier
    with pytest.raises(ShapeMismatch):
        runtime.predict({name: np.zeros(shape)})


def test_unknown_output(classifier: Classifier) -> None:
    runtime, name = classifier
    with pytest.raises(InvalidInput, match="unknown output"):
        runtime.predict({name: np.zeros((1, 4))}, ["nope"])


def test_unknown_and_missing_inputs(classifier: Classifier) -> None:
    runtime, name = classifier
    with pytest.raises(InvalidInput, match="unknown input"):
        runtime.predict({name: np.zeros((1, 4)), "extra": np.zeros((1, 4))})
    with pytest.raises(InvalidInput, match="missing input"):
        runtime.predict({})


@pytest.mark.parametrize(
    "values", [np.array([["a", "b", "c", "d"]]), np.array([[b"a", b"b", b"c", b"d"]], dtype=object)]
)
def test_strings_to_a_float_model(classifier: Classifier, values: np.ndarray) -> None:
    runtime, name = classifier
    with pytest.raises(InvalidInput):
        runtime.predict({name: values})


def test_ints_to_a_float_model_are_cast(classifier: Classifier) -> None:
    runtime, name = classifier
    features, _ = trained.iris()
    as_ints = np.rint(features[:10] * 10).astype(np.int64)
    as_floats = as_ints.astype(np.float64)
    label = runtime.signature.outputs[0].name
    from_ints = runtime.predict({name: as_ints}, [label])[label]
    np.testing.assert_array_equal(from_ints, runtime.predict({name: as_floats}, [label])[label])


def test_a_zip_end_record_over_garbage_is_unsupported(tmp_path: Path) -> None:
    """``zipfile.is_zipfile`` accepts it; opening the directory it points to fails."""
    end_record = b"PK\x05\x06" + struct.pack("<HHHHIIH", 0, 0, 1, 1, 46, 0, 0)
    path = tmp_path / "broken.skops"
    path.write_bytes(b"garbage!" * 10 + end_record)
    with pytest.raises(UnsupportedArtifact):
        inspect_artifact(path, "broken.skops", trust_pickle=False)


@pytest.mark.parametrize(
    "members",
    [
        {"saved_model.pb": b"\x08\x01", "variables/variables.index": b"\x00"},  # TensorFlow
        {"notes.txt": b"not a model"},
    ],
    ids=["tensorflow-savedmodel", "unknown-zip"],
)
def test_a_file_not_served_says_what_is_and_that_onnx_is_the_portable_way(
    tmp_path: Path, members: dict[str, bytes]
) -> None:
    import zipfile

    path = tmp_path / "model.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    with pytest.raises(UnsupportedArtifact) as caught:
        inspect_artifact(path, "model.zip", trust_pickle=True)
    error = caught.value
    for accepted in (".skops", ".onnx", "XGBoost", "LightGBM", ".pt2", ".keras"):
        assert accepted in error.details["accepted"]
    assert "ONNX" in error.message and "ONNX" in error.details["portable"]


def test_a_pickled_booster_is_refused_naming_its_safe_format(tmp_path: Path) -> None:
    from tests import framework_models as fm

    path = trained.write_pickle(fm.xgb_classifier(), tmp_path / "booster.pkl")
    with pytest.raises(UntrustedArtifact, match="XGBoost/LightGBM save_model"):
        inspect_artifact(path, "booster.pkl", trust_pickle=False)
