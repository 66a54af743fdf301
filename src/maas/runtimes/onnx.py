"""ONNX models through onnxruntime (which releases the GIL while it runs)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np

from maas.errors import InvalidInput, RuntimeFailure, UnsupportedArtifact
from maas.protocols.signature import Signature, TensorSpec
from maas.runtimes.base import ArtifactInfo, LoadOptions, Runtime

__all__ = ["OnnxRuntime", "onnx_signature"]

_ONNX_TYPES = {
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(float16)": "FP16",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(bool)": "BOOL",
    "tensor(string)": "BYTES",
}


def _specs(nodes: Any) -> list[TensorSpec]:
    """Tensor nodes only: non-tensor outputs (ZipMap's seq(map)) are left out."""
    return [
        TensorSpec(
            name=node.name,
            datatype=_ONNX_TYPES[node.type],
            shape=[dim if isinstance(dim, int) and dim >= 0 else -1 for dim in node.shape],
        )
        for node in nodes
        if node.type in _ONNX_TYPES
    ]


def onnx_signature(session: Any) -> Signature:
    return Signature(inputs=_specs(session.get_inputs()), outputs=_specs(session.get_outputs()))


def open_session(path: Path, threads: int | None = None) -> Any:
    """An onnxruntime session of ``threads`` intra-op threads; by default as many as
    the CPUs this process may run on. onnxruntime's own default counts the machine's
    cores and pins its threads to them, escaping ``taskset`` and container CPU sets: a
    server given one core ran the digits MLP on two, at 1.8x the CPU per request."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads or len(os.sched_getaffinity(0))
    options.log_severity_level = 3
    try:
        return onnxruntime.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:
        raise UnsupportedArtifact(
            f"onnxruntime cannot load this model ({type(exc).__name__})"
        ) from None


def _to_onnx(value: np.ndarray) -> np.ndarray:
    """BYTES arrive as object arrays of bytes; onnxruntime wants str."""
    if value.dtype != object:
        return value
    decoded = [
        v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in value.ravel()
    ]
    return np.array(decoded, dtype=object).reshape(value.shape)


class OnnxRuntime(Runtime):
    framework: ClassVar[str] = "onnx"
    releases_gil: ClassVar[bool] = True
    v2_platform: ClassVar[str] = "onnxruntime_onnx"
    optimize_methods: ClassVar[tuple[str, ...]] = ("quantize_int8", "prune")
    job_loadable: ClassVar[bool] = True

    def __init__(self, session: Any) -> None:
        self._session = session
        self.signature = onnx_signature(session)
        if len(self.signature.inputs) != len(session.get_inputs()):
            raise UnsupportedArtifact("the model has inputs that are not tensors")

    @classmethod
    def load(cls, path: Path, *, options: LoadOptions) -> Self:
        return cls(open_session(path, options.threads))

    @classmethod
    def recognises(cls, path: Path, filename: str, head: bytes) -> bool:
        return path.is_file() and (filename.lower().endswith(".onnx") or _is_onnx(path))

    @classmethod
    def inspect(cls, path: Path, *, options: LoadOptions) -> ArtifactInfo:
        runtime = cls.load(path, options=replace(options, threads=1))
        return ArtifactInfo(cls.framework, runtime.signature, None, {})

    def _run(self, inputs: dict[str, np.ndarray], outputs: Sequence[str]) -> dict[str, np.ndarray]:
        feed = {name: _to_onnx(value) for name, value in inputs.items()}
        try:
            values = self._session.run(list(outputs), feed)
        except Exception as exc:
            name = type(exc).__name__
            if name in ("InvalidArgument", "Fail"):
                raise InvalidInput(f"the model refused the input: {str(exc)[:200]}") from None
            raise RuntimeFailure(f"the model failed: {name}") from None
        result = {}
        for name, value in zip(outputs, values, strict=True):
            array = np.asarray(value)
            if array.dtype.kind in "UO":
                array = np.array([str(v).encode() for v in array.ravel()], dtype=object).reshape(
                    array.shape
                )
            result[name] = array
        return result


def _is_onnx(path: Path) -> bool:
    """An ONNX file is a protobuf ModelProto; parse it without external data."""
    try:
        import onnx
    except ImportError:
        return False
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:
        return False
    return bool(model.graph.node)
