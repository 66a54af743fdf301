"""A tiny real image classifier for tests: an ``onnx-image`` directory whose ONNX graph
names the dominant colour of an image (no torch, built in milliseconds)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import onnx
from onnx import TensorProto, helper
from PIL import Image

from maas.runtimes.images import Preprocessing
from maas.runtimes.onnx_image import ImageManifest

__all__ = ["COLOURS", "colour_model", "pack", "png"]

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


def pack(directory: Path, archive: Path) -> Path:
    """The tar ``maas models push DIR`` would upload."""
    with tarfile.open(archive, "w") as tar:
        for path in sorted(directory.iterdir()):
            tar.add(path, arcname=path.name)
    return archive
