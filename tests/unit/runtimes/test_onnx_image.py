"""The ``onnx-image`` runtime on a tiny real ONNX graph: colours in, colour names out."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from PIL import Image

from maas.errors import InvalidImage, UnsupportedArtifact
from maas.runtimes.base import ImageLimits, LoadOptions
from maas.runtimes.catalog import inspect_artifact
from maas.runtimes.images import Preprocessing
from maas.runtimes.onnx_image import ImageManifest, OnnxImageRuntime

COLOURS = ["red", "green", "blue"]


def colour_model(directory: Path, *, size: int = 8, layout: str = "NCHW") -> Path:
    """A classifier whose logits are each channel's mean (scaled to 0-10): a red image
    is ``red``. Written as an ``onnx-image`` directory."""
    axes = [2, 3] if layout == "NCHW" else [1, 2]
    shape = [None, 3, size, size] if layout == "NCHW" else [None, size, size, 3]
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["input", "axes"], ["mean"], keepdims=0),
            helper.make_node("Mul", ["mean", "ten"], ["logits"]),
        ],
        "colours",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [None, 3])],
        [
            helper.make_tensor("axes", TensorProto.INT64, [2], axes),
            helper.make_tensor("ten", TensorProto.FLOAT, [], [10.0]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    directory.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(directory / "model.onnx"))
    spec = Preprocessing(crop=(size, size), resize=None, scale=1 / 255, layout=layout)
    ImageManifest(spec, COLOURS, top_k=2).write(directory)
    return directory


def png(colour: tuple[int, int, int], size: tuple[int, int] = (20, 10)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return buffer.getvalue()


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
