"""The ``onnx-image`` runtime on a tiny real ONNX graph: colours in, colour names out."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tests.image_models import colour_model, png

from maas.errors import InvalidImage, UnsupportedArtifact
from maas.runtimes.base import ImageLimits, LoadOptions
from maas.runtimes.catalog import inspect_artifact
from maas.runtimes.onnx_image import OnnxImageRuntime


def _images(*items: bytes) -> np.ndarray:
    array = np.empty(len(items), dtype=object)
    array[:] = list(items)
    return array


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_classifies_each_image_of_a_batch(tmp_path: Path, layout: str) -> None:
    runtime = OnnxImageRuntime.load(colour_model(tmp_path, layout=layout), options=LoadOptions())
    out = runtime.predict({"image": _images(png((250, 10, 10)), png((0, 0, 200)))})
    assert out["label"].tolist() == [b"red", b"blue"]
    assert out["top_labels"].shape == (2, 2)
    assert out["top_labels"][1].tolist() == [b"blue", b"red"]
    np.testing.assert_allclose(out["probabilities"].sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(out["top_scores"][:, 0], out["probabilities"].max(axis=1))
    assert out["top_scores"][0, 0] > 0.9

    empty = runtime.predict({"image": _images()})
    assert empty["probabilities"].shape == (0, 3)
    assert empty["top_labels"].shape == (0, 2)


def test_a_bad_image_and_the_limits_fail_the_call(tmp_path: Path) -> None:
    path = colour_model(tmp_path)
    runtime = OnnxImageRuntime.load(path, options=LoadOptions())
    with pytest.raises(InvalidImage):
        runtime.predict({"image": _images(png((1, 2, 3)), b"\x89PNG broken")})
    strict = LoadOptions(images=ImageLimits(max_pixels=199))
    with pytest.raises(Exception, match="pixels") as raised:
        OnnxImageRuntime.load(path, options=strict).predict({"image": _images(png((1, 2, 3)))})
    assert raised.value.code == "image_too_large"  # type: ignore[attr-defined]


def test_the_catalog_finds_it_and_records_bytes_in_and_the_preprocessing(
    tmp_path: Path,
) -> None:
    info = inspect_artifact(colour_model(tmp_path / "model"), "colours.tar", trust_pickle=False)
    assert info.framework == "onnx-image"
    assert info.task == "image-classification"
    assert [(s.name, s.datatype, s.shape) for s in info.signature.inputs] == [
        ("image", "BYTES", [-1])
    ]
    assert [s.name for s in info.signature.outputs] == [
        "label",
        "top_labels",
        "top_scores",
        "probabilities",
    ]
    assert info.details["preprocessing"]["crop"] == [8, 8]
    assert info.details["classes"] == 3


def test_a_model_whose_input_does_not_fit_its_preprocessing_is_refused(tmp_path: Path) -> None:
    path = colour_model(tmp_path, size=8)
    manifest = json.loads((path / "onnx_image.json").read_text())
    manifest["preprocessing"]["crop"] = [16, 16]
    (path / "onnx_image.json").write_text(json.dumps(manifest))
    with pytest.raises(UnsupportedArtifact, match="preprocessing makes"):
        OnnxImageRuntime.load(path, options=LoadOptions())


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        ({"labels": ["red", "green"]}, r"\[batch, 2\] logits"),
        ({"labels": []}, "labels"),
        ({"task": "detection"}, "task"),
        ({"format": 2}, "format"),
        ({"top_k": 0}, "top_k"),
    ],
)
def test_a_wrong_manifest_is_refused_by_name(
    tmp_path: Path, change: dict[str, object], complaint: str
) -> None:
    path = colour_model(tmp_path)
    manifest = json.loads((path / "onnx_image.json").read_text())
    (path / "onnx_image.json").write_text(json.dumps({**manifest, **change}))
    with pytest.raises(UnsupportedArtifact, match=complaint):
        OnnxImageRuntime.load(path, options=LoadOptions())
