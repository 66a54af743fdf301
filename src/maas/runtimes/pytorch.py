"""PyTorch models as programs, never as pickles: ``torch.export`` archives (``.pt2``)
and TorchScript (``.pt``).

Both carry the computation itself (an ATen graph, TorchScript code), so they run
without the Python class that defined the model, and both are checked before torch
reads them (``maas.runtimes.torch_archives``: what each loader would otherwise run).
A ``torch.save`` file (a state dict, a pickled module) is neither: a pickle runs code
when loaded, and a state dict has no architecture to run its weights with, so it is
refused even on a server that trusts pickles, with a message saying how to export.

An exported program records its inputs' dtypes and shapes (its example inputs, with
``torch.export.Dim`` dimensions as ``-1``); a TorchScript file does not, so its
signature is declared at push, in the version's metadata (``"signature"``). torch
releases the GIL inside its operators, so serving runs these models in threads,
``torch.set_num_threads`` sized to the CPUs of this process's affinity mask.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np

from maas.errors import InvalidInput, RuntimeFailure, UnsupportedArtifact
from maas.protocols.signature import Signature, TensorSpec
from maas.protocols.tensors import DATATYPES
from maas.runtimes.base import LoadOptions, Runtime
from maas.runtimes.importing import FRAMEWORK_IMPORT
from maas.runtimes.torch_archives import (
    check_export_archive,
    check_torchscript_archive,
    torch_zip_kind,
)

__all__ = [
    "TorchCallableRuntime",
    "TorchExportRuntime",
    "TorchSaveRefusal",
    "TorchScriptRuntime",
    "output_names",
    "set_threads",
    "spec_of",
    "torch_spec",
]

#: torch dtype names (``str(torch.float32)`` without ``torch.``) -> V2 datatypes.
_DATATYPES = {
    "float32": "FP32",
    "float64": "FP64",
    "float16": "FP16",
    "int64": "INT64",
    "int32": "INT32",
    "int16": "INT16",
    "int8": "INT8",
    "uint8": "UINT8",
    "bool": "BOOL",
}
_PICKLE_SUFFIXES = (".pth", ".pt", ".ckpt")


def output_names(count: int) -> list[str]:
    return ["output"] if count == 1 else [f"output_{i}" for i in range(count)]


def set_threads(options: LoadOptions) -> None:
    import torch

    torch.set_num_threads(options.threads or len(os.sched_getaffinity(0)))


def _to_torch(array: np.ndarray) -> Any:
    import torch

    return torch.from_numpy(array if array.flags.writeable else array.copy())


def _flat(result: Any) -> list[Any]:
    """A model's outputs as a list of tensors: one tensor, or a tuple/list of them."""
    import torch

    items = list(result) if isinstance(result, tuple | list) else [result]
    if not all(isinstance(item, torch.Tensor) for item in items):
        raise RuntimeFailure("the model returned something other than tensors")
    return items


class TorchCallableRuntime(Runtime):
    """Runs a callable on tensors in the signature's order, outputs by position."""

    releases_gil: ClassVar[bool] = True

    def __init__(self, module: Any, signature: Signature) -> None:
        self._module = module
        self.signature = signature

    @classmethod
    def load(cls, path: Path, *, options: LoadOptions) -> Self:
        """Open the model and run one row through it (its outputs must be the ones its
        signature declares), under ``FRAMEWORK_IMPORT``: torch imports lazily on a
        first load and a first call, and its imports do not survive two threads."""
        with FRAMEWORK_IMPORT:
            runtime = cls.open(path, options=options)
            runtime.check_outputs()
        return runtime

    @classmethod
    @abc.abstractmethod
    def open(cls, path: Path, *, options: LoadOptions) -> Self:
        """The runtime of the file at ``path``, checked and read safely."""

    def check_outputs(self) -> None:
        """One row of zeros through the model: its outputs must be the declared ones."""
        zeros = {
            spec.name: np.zeros([1 if d < 0 else d for d in spec.shape], DATATYPES[spec.datatype])
            for spec in self.signature.inputs
        }
        try:
            results = self._call(zeros)
        except InvalidInput as exc:
            raise UnsupportedArtifact(
                f"the model does not run on inputs of its signature: {exc.message}",
                details={"inputs": [s.model_dump() for s in self.signature.inputs]},
            ) from None
        declared = self.signature.outputs
        got = [(str(r.dtype).removeprefix("torch."), list(r.shape)) for r in results]
        if len(results) != len(declared) or any(
            _DATATYPES.get(dtype) != spec.datatype or len(shape) != len(spec.shape)
            for (dtype, shape), spec in zip(got, declared, strict=False)
        ):
            raise UnsupportedArtifact(
                "the model's outputs are not the ones its signature declares",
                details={"declared": [s.model_dump() for s in declared], "got": got},
            )

    def _call(self, inputs: dict[str, np.ndarray]) -> list[Any]:
        import torch

        tensors = [_to_torch(inputs[spec.name]) for spec in self.signature.inputs]
        try:
            with torch.inference_mode():
                return _flat(self._module(*tensors))
        except (RuntimeError, AssertionError, ValueError, IndexError) as exc:
            # shape guards of an exported program, an operator refusing its input
            message = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            raise InvalidInput(f"the model refused the input: {message}") from None

    def _run(self, inputs: dict[str, np.ndarray], outputs: Sequence[str]) -> dict[str, np.ndarray]:
        results = self._call(inputs)
        names = [spec.name for spec in self.signature.outputs]
        if len(results) != len(names):
            raise RuntimeFailure(f"the model returned {len(results)} tensors, not {len(names)}")
        values = dict(zip(names, results, strict=True))
        return {name: values[name].detach().cpu().numpy() for name in outputs}


def spec_of(name: str, dtype: str, dims: Sequence[Any]) -> TensorSpec:
    """A tensor's spec from its dtype's name (``float32``) and its dimensions: any that
    is not a number (a symbolic size, Keras's ``None``) is ``-1``."""
    dtype = dtype.removeprefix("torch.")
    if dtype not in _DATATYPES:
        raise UnsupportedArtifact(f"the model's tensor {name!r} is {dtype}, which is not served")
    shape = [dim if isinstance(dim, int) else -1 for dim in dims]
    return TensorSpec(name=name, datatype=_DATATYPES[dtype], shape=shape)


def torch_spec(name: str, value: Any) -> TensorSpec:
    """A tensor's spec from its fake value in an exported graph: symbolic sizes
    (``torch.export.Dim``) are ``-1``."""
    import torch

    if not isinstance(value, torch.Tensor):
        raise UnsupportedArtifact(f"the exported program's {name!r} is not a tensor")
    return spec_of(name, str(value.dtype), value.shape)


def export_signature(program: Any) -> Signature:
    from torch.export.graph_signature import InputKind

    placeholders = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    inputs = []
    for spec in program.graph_signature.input_specs:
        if spec.kind != InputKind.USER_INPUT:
            continue
        name = getattr(spec.arg, "name", None)
        if name is None or name not in placeholders:
            raise UnsupportedArtifact("the exported program has inputs that are not tensors")
        inputs.append(torch_spec(name, placeholders[name].meta.get("val")))
    output = next(n for n in program.graph.nodes if n.op == "output")
    values = [arg.meta.get("val") for arg in output.args[0]]
    user = len(program.graph_signature.user_outputs)
    values = values[len(values) - user :]  # mutated buffers come first
    names = output_names(len(values))
    return Signature(
        inputs=inputs, outputs=[torch_spec(n, v) for n, v in zip(names, values, strict=True)]
    )


class TorchExportRuntime(TorchCallableRuntime):
    framework: ClassVar[str] = "torch-export"
    v2_platform: ClassVar[str] = "pytorch_export"

    @classmethod
    def recognises(cls, path: Path, filename: str, head: bytes) -> bool:
        return path.is_file() and head[:2] == b"PK" and torch_zip_kind(path) == "export"

    @classmethod
    def open(cls, path: Path, *, options: LoadOptions) -> Self:
        import torch

        check_export_archive(path)
        set_threads(options)
        try:
            program = torch.export.load(str(path))
        except Exception as exc:
            raise UnsupportedArtifact(
                f"torch.export.load cannot read this archive ({type(exc).__name__})"
            ) from None
        return cls(program.module(), export_signature(program))


class TorchScriptRuntime(TorchCallableRuntime):
    framework: ClassVar[str] = "torchscript"
    v2_platform: ClassVar[str] = "pytorch_torchscript"

    @classmethod
    def recognises(cls, path: Path, filename: str, head: bytes) -> bool:
        return path.is_file() and head[:2] == b"PK" and torch_zip_kind(path) == "torchscript"

    @classmethod
    def open(cls, path: Path, *, options: LoadOptions) -> Self:
        import torch

        if options.signature is None or not options.signature.inputs:
            raise UnsupportedArtifact(
                "a TorchScript file does not record its inputs' dtypes and shapes: declare "
                'them at push in the metadata, e.g. {"signature": {"inputs": [{"name": '
                '"x", "datatype": "FP32", "shape": [-1, 4]}], "outputs": [{"name": '
                '"output", "datatype": "FP32", "shape": [-1, 3]}]}}, or push a '
                "torch.export archive (.pt2), which records them"
            )
        check_torchscript_archive(path)
        set_threads(options)
        try:
            jit: Any = torch.jit  # its load is untyped
            module = jit.load(str(path), map_location="cpu")
        except Exception as exc:
            raise UnsupportedArtifact(
                f"torch.jit.load cannot read this file ({type(exc).__name__})"
            ) from None
        module.eval()
        arguments = module.forward.schema.arguments[1:]  # after self
        if len(arguments) != len(options.signature.inputs):
            raise UnsupportedArtifact(
                f"the TorchScript forward takes {len(arguments)} tensors; the declared "
                f"signature has {len(options.signature.inputs)} inputs"
            )
        return cls(module, options.signature)


class TorchSaveRefusal(Runtime):
    """``torch.save`` files, recognised only to say why they are refused and what to
    push instead (the pickle runtime would otherwise take them on a trusting server)."""

    framework: ClassVar[str] = "torch-save"

    @classmethod
    def recognises(cls, path: Path, filename: str, head: bytes) -> bool:
        if not path.is_file():
            return False
        if head[:2] == b"PK":
            return torch_zip_kind(path) == "pickle"
        return head[:1] == b"\x80" and filename.lower().endswith(_PICKLE_SUFFIXES)

    @classmethod
    def load(cls, path: Path, *, options: LoadOptions) -> Self:
        raise UnsupportedArtifact(
            "a torch.save file (a state dict or a pickled module) is refused, even on a "
            "server that trusts pickles: loading it runs code, and a state dict holds "
            "weights without the architecture to run them. Export the model instead: "
            "torch.export.save(torch.export.export(model, example_inputs), 'model.pt2'), "
            "torch.jit.save(torch.jit.script(model), 'model.pt'), or torch.onnx.export "
            "to .onnx (the portable choice)",
            details={"format": "torch.save"},
        )

    def _run(self, inputs: dict[str, np.ndarray], outputs: Sequence[str]) -> dict[str, np.ndarray]:
        raise AssertionError("never loaded")  # pragma: no cover
