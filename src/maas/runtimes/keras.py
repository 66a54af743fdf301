"""Keras 3 models from ``.keras`` files, on the torch backend.

A ``.keras`` file is a zip of a JSON config, weights in HDF5 and metadata.
``keras.saving.load_model(safe_mode=True)`` builds the layers the config names from
Keras's own packages only (a class must be a Keras saveable of ``keras``/
``keras_hub``…; no other module is imported) and refuses a ``Lambda`` layer's Python
bytecode: such a file is ``UntrustedArtifact``. The weights are arrays read by h5py.

Keras picks its backend once, when first imported, from ``KERAS_BACKEND``: this module
sets it to ``torch`` before importing keras (maas ships torch, not TensorFlow or JAX),
and refuses to run if keras was already imported in the process with another backend.
The model then runs as torch operators, which release the GIL: threads, as PyTorch.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any, ClassVar, Self

from maas.errors import MissingExtra, RuntimeFailure, UnsupportedArtifact, UntrustedArtifact
from maas.protocols.signature import Signature
from maas.runtimes.base import LoadOptions
from maas.runtimes.pytorch import TorchCallableRuntime, output_names, set_threads, spec_of

__all__ = ["KerasRuntime", "is_keras_file"]

_MEMBERS = {"metadata.json", "config.json", "model.weights.h5"}


def is_keras_file(path: Path) -> bool:
    """A ``.keras`` zip: its metadata, config and weights at the root."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            return set(archive.namelist()) >= _MEMBERS
    except (zipfile.BadZipFile, OSError, ValueError):
        return False


def _keras() -> Any:
    """keras, imported on the torch backend."""
    if "keras" not in sys.modules:
        os.environ["KERAS_BACKEND"] = "torch"
    try:
        import keras
    except ImportError:
        raise MissingExtra("keras", "keras") from None

    backend = keras.backend.backend()
    if backend != "torch":
        raise RuntimeFailure(
            f"keras was imported in this server process with the {backend} backend before "
            "maas could choose torch; maas runs Keras models on torch only: start the "
            "server with KERAS_BACKEND=torch"
        )
    return keras


def _load_model(keras: Any, path: Path) -> Any:
    """``load_model`` wants the ``.keras`` suffix, which a stored artifact (named by
    its digest) lacks: it reads a link to the file that has it."""
    with tempfile.TemporaryDirectory(prefix="maas-keras-") as folder:
        link = Path(folder) / "model.keras"
        link.symlink_to(path.resolve())
        try:
            return keras.saving.load_model(str(link), compile=False, safe_mode=True)
        except ValueError as exc:
            if "safe_mode" in str(exc):
                raise UntrustedArtifact(
                    "the Keras model holds Python code (a Lambda layer's function), which "
                    "loading would run; maas loads .keras files in safe mode only: replace "
                    "the Lambda by Keras layers, or export the model to ONNX",
                    details={"refused": "lambda"},
                ) from None
            raise UnsupportedArtifact(f"not a loadable .keras file ({str(exc)[:200]})") from None
        except Exception as exc:
            raise UnsupportedArtifact(
                f"not a loadable .keras file ({type(exc).__name__}: {str(exc)[:200]})"
            ) from None


def keras_signature(model: Any) -> Signature:
    try:
        inputs, outputs = list(model.inputs), list(model.outputs)
    except (AttributeError, ValueError):
        inputs, outputs = [], []
    if not inputs or not outputs:
        raise UnsupportedArtifact(
            "the Keras model records no inputs (a subclassed model never called): build "
            "it with keras.Input, or export it to ONNX"
        )
    return Signature(
        inputs=[spec_of(str(t.name), str(t.dtype), t.shape) for t in inputs],
        outputs=[
            spec_of(name, str(t.dtype), t.shape)
            for name, t in zip(output_names(len(outputs)), outputs, strict=True)
        ],
    )


class KerasRuntime(TorchCallableRuntime):
    framework: ClassVar[str] = "keras"
    v2_platform: ClassVar[str] = "keras"

    @classmethod
    def recognises(cls, path: Path, filename: str, head: bytes) -> bool:
        return path.is_file() and head[:2] == b"PK" and is_keras_file(path)

    @classmethod
    def open(cls, path: Path, *, options: LoadOptions) -> Self:
        keras = _keras()
        set_threads(options)
        model = _load_model(keras, path)
        signature = keras_signature(model)

        def call(*tensors: Any) -> Any:
            result = model(list(tensors) if len(tensors) > 1 else tensors[0], training=False)
            return keras.tree.flatten(result)

        return cls(call, signature)
