"""``OnnxImageRuntime``: an ONNX image classifier served from encoded images.

The artifact is a directory (pushed as a tar or zip, like any model directory) of two
files:

    onnx_image.json   what the model is for: ``task`` (image-classification), its
                      ``preprocessing`` (``maas.runtimes.images.Preprocessing``), its
                      ``labels`` in logit order, and ``top_k`` (5 by default)
    model.onnx        a graph of one 4-D float input ([batch, 3, H, W] or
                      [batch, H, W, 3], as the preprocessing's layout says) and, first
                      among its outputs, the logits [batch, labels]

Callers never see the float tensor: the V2 signature takes ``image``, BYTES ``[-1]``
(one encoded JPEG, PNG or WebP per element), and answers ``label`` (the best),
``top_labels`` and ``top_scores`` (the ``top_k`` best, softmax scores) and
``probabilities`` (all of them). Decoding and preprocessing run in the instance's
thread with the model, off the event loop, within the server's ``limits.max_image_*``.
A version's preprocessing and label count are recorded in its metadata at push.

Why a runtime of its own and not a mode of ``onnx``: the signature the registry keeps
is the one callers use, and it differs (BYTES, not the graph's float input); the
catalog matches this directory by its manifest before any other, and the ONNX session
itself is ``maas.runtimes.onnx.open_session``, shared.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np

from maas.errors import RuntimeFailure, UnsupportedArtifact
from maas.protocols.signature import Signature, TensorSpec
from maas.runtimes.base import ArtifactInfo, ImageLimits, LoadOptions, Runtime
from maas.runtimes.images import Preprocessing, decode_image, image_bytes, preprocess

__all__ = [
    "IMAGE_CLASSIFICATION",
    "MANIFEST",
    "MODEL_FILE",
    "ImageManifest",
    "OnnxImageRuntime",
    "image_signature",
]

MANIFEST = "onnx_image.json"
MODEL_FILE = "model.onnx"
IMAGE_CLASSIFICATION = "image-classification"
_FORMAT = 1
_MAX_MANIFEST_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class ImageManifest:
    """The contents of ``onnx_image.json``."""

    preprocessing: Preprocessing
    labels: list[str] = field(default_factory=list)
    top_k: int = 5

    def write(self, directory: Path) -> None:
        body = {
            "format": _FORMAT,
            "task": IMAGE_CLASSIFICATION,
            "preprocessing": self.preprocessing.to_json(),
            "labels": self.labels,
            "top_k": self.top_k,
        }
        (directory / MANIFEST).write_text(json.dumps(body, indent=1), encoding="utf-8")

    @classmethod
    def read(cls, directory: Path) -> ImageManifest:
        """The manifest of ``directory``, checked; ``UnsupportedArtifact`` if it is wrong."""
        path = directory / MANIFEST
        if path.stat().st_size > _MAX_MANIFEST_BYTES:
            raise UnsupportedArtifact(f"{MANIFEST} is larger than 16 MiB")
        try:
            body = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise UnsupportedArtifact(f"{MANIFEST} is not JSON ({exc})") from None
        if not isinstance(body, dict) or body.get("format") != _FORMAT:
            raise UnsupportedArtifact(f"{MANIFEST}: format must be {_FORMAT}")
        if body.get("task") != IMAGE_CLASSIFICATION:
            raise UnsupportedArtifact(f"{MANIFEST}: task must be {IMAGE_CLASSIFICATION}")
        labels = body.get("labels")
        if (
            not isinstance(labels, list)
            or not labels
            or not all(isinstance(x, str) for x in labels)
        ):
            raise UnsupportedArtifact(f"{MANIFEST}: labels must be a list of strings")
        top_k = body.get("top_k", 5)
        if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
            raise UnsupportedArtifact(f"{MANIFEST}: top_k must be a positive integer")
        preprocessing = Preprocessing.from_json(body.get("preprocessing"))
        return cls(preprocessing, labels, min(top_k, len(labels)))


def image_signature(top_k: int, classes: int) -> Signature:
    """What callers send and get: encoded images in, labels and scores out."""
    return Signature(
        inputs=[TensorSpec(name="image", datatype="BYTES", shape=[-1])],
        outputs=[
            TensorSpec(name="label", datatype="BYTES", shape=[-1]),
            TensorSpec(name="top_labels", datatype="BYTES", shape=[-1, top_k]),
            TensorSpec(name="top_scores", datatype="FP32", shape=[-1, top_k]),
            TensorSpec(name="probabilities", datatype="FP32", shape=[-1, classes]),
        ],
    )


def is_onnx_image_dir(path: Path) -> bool:
    return path.is_dir() and (path / MANIFEST).is_file()


class OnnxImageRuntime(Runtime):
    framework: ClassVar[str] = "onnx-image"
    releases_gil: ClassVar[bool] = True
    v2_platform: ClassVar[str] = "onnxruntime_onnx"

    def __init__(self, session: Any, manifest: ImageManifest, limits: ImageLimits) -> None:
        self._session = session
        self.manifest = manifest
        self._limits = limits
        self._input, self._output = _check_graph(session, manifest)
        self._labels = np.array([label.encode() for label in manifest.labels], dtype=object)
        self.signature = image_signature(manifest.top_k, len(manifest.labels))

    @classmethod
    def recognises(cls, path: Path, filename: str, head: bytes) -> bool:
        return is_onnx_image_dir(path)

    @classmethod
    def load(cls, path: Path, *, options: LoadOptions) -> Self:
        from maas.runtimes.onnx import open_session

        if not is_onnx_image_dir(path):
            raise UnsupportedArtifact(f"an ONNX image model is a directory with {MANIFEST}")
        manifest = ImageManifest.read(path)
        if not (path / MODEL_FILE).is_file():
            raise UnsupportedArtifact(f"the ONNX image model has no {MODEL_FILE}")
        runtime = cls(open_session(path / MODEL_FILE, options.threads), manifest, options.images)
        runtime._warm()
        return runtime

    def _warm(self) -> None:
        """One batch of zeros through the graph: serving's own warm-up sends an empty
        BYTES element, which is no image, so the first caller would pay for
        onnxruntime's lazy initialisation."""
        zeros = np.zeros([1, *self.manifest.preprocessing.input_shape[1:]], dtype=np.float32)
        try:
            self._session.run([self._output], {self._input: zeros})
        except Exception as exc:
            raise UnsupportedArtifact(
                f"the ONNX image model fails on a zero image ({type(exc).__name__})"
            ) from None

    @classmethod
    def inspect(cls, path: Path, *, options: LoadOptions) -> ArtifactInfo:
        """The version's metadata records how images are prepared and how many labels
        there are (the labels themselves stay in the artifact)."""
        runtime = cls.load(path, options=replace(options, threads=1))
        details = {
            "format": "onnx",
            "preprocessing": runtime.manifest.preprocessing.to_json(),
            "classes": len(runtime.manifest.labels),
            "top_k": runtime.manifest.top_k,
        }
        return ArtifactInfo(cls.framework, runtime.signature, IMAGE_CLASSIFICATION, details)

    def tensors(self, images: np.ndarray) -> np.ndarray:
        """The model input of a batch of encoded images (decoded within the limits)."""
        spec = self.manifest.preprocessing
        arrays = [
            preprocess(decode_image(image_bytes(item, self._limits), self._limits, spec), spec)
            for item in images.reshape(-1)
        ]
        if not arrays:
            return np.zeros([0, *spec.input_shape[1:]], dtype=np.float32)
        return np.stack(arrays)

    def _run(self, inputs: dict[str, np.ndarray], outputs: Sequence[str]) -> dict[str, np.ndarray]:
        batch = self.tensors(inputs["image"])
        if len(batch):
            try:
                (logits,) = self._session.run([self._output], {self._input: batch})
            except Exception as exc:  # the feed is ours: a failure here is the model's
                raise RuntimeFailure(f"the ONNX image model failed: {type(exc).__name__}") from None
        else:
            logits = np.zeros((0, len(self._labels)), dtype=np.float32)
        result = self._classify(np.asarray(logits, dtype=np.float32))
        return {name: result[name] for name in outputs}

    def _classify(self, logits: np.ndarray) -> dict[str, np.ndarray]:
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        probabilities = (shifted / shifted.sum(axis=1, keepdims=True)).astype(np.float32)
        top = np.argsort(-probabilities, axis=1, kind="stable")[:, : self.manifest.top_k]
        return {
            "label": self._labels[top[:, 0]],
            "top_labels": self._labels[top],
            "top_scores": np.take_along_axis(probabilities, top, axis=1),
            "probabilities": probabilities,
        }


def _check_graph(session: Any, manifest: ImageManifest) -> tuple[str, str]:
    """The graph's image input and logits output, checked against the manifest."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or inputs[0].type != "tensor(float)" or len(inputs[0].shape) != 4:
        raise UnsupportedArtifact("an ONNX image model takes one 4-D float input")
    expected = manifest.preprocessing.input_shape
    declared = inputs[0].shape
    for want, got in zip(expected[1:], declared[1:], strict=True):
        if isinstance(got, int) and got > 0 and got != want:
            raise UnsupportedArtifact(
                f"the model's input is {declared}; its preprocessing makes {expected}"
            )
    logits = outputs[0]
    classes = logits.shape[-1] if len(logits.shape) == 2 else None
    if len(logits.shape) != 2 or (
        isinstance(classes, int) and classes > 0 and classes != len(manifest.labels)
    ):
        raise UnsupportedArtifact(
            f"the first output must be [batch, {len(manifest.labels)}] logits, not {logits.shape}"
        )
    return inputs[0].name, logits.name
