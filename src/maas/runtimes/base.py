"""The runtime contract: load an artifact, describe its signature, run one batch.

Runtimes are synchronous: serving runs them in worker threads or processes, never on
the event loop. Inputs are numpy arrays keyed by name, rows along the first axis;
BYTES tensors are object arrays of ``bytes``. Nothing here assumes the inputs are
numeric tensors, so runtimes for text, images or audio fit the same interface.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np

from maas.errors import InvalidInput, ShapeMismatch
from maas.protocols.management import DeploymentSpec
from maas.protocols.signature import Signature, TensorSpec
from maas.protocols.tensors import DATATYPES

__all__ = ["ArtifactInfo", "ImageLimits", "LoadOptions", "Runtime", "check_request", "texts_of"]


@dataclass(frozen=True, slots=True)
class ImageLimits:
    """What an image model decodes (``limits.max_image_bytes``, ``max_image_pixels``)."""

    max_bytes: int = 8 * 1024 * 1024
    max_pixels: int = 25_000_000


@dataclass(frozen=True, slots=True)
class LoadOptions:
    trust_pickle: bool = False
    threads: int | None = None
    #: Where a runtime may keep derived files (a GGUF file's dequantized weights).
    cache_dir: Path | None = None
    #: Sequences a language model decodes together (llama.cpp sizes its context for them).
    sequences: int = 1
    #: Tokens of KV cache a llama.cpp model holds for all its sequences; ``None``: default.
    kv_cache_tokens: int | None = None
    #: A deployment's ``quantize`` (``"int8"``): only runtimes that name it in
    #: ``Runtime.quantizations`` are given one.
    quantize: str | None = None
    #: The version's signature as the registry records it: declared at push (the
    #: metadata's ``signature``) for files that do not record their own (TorchScript).
    signature: Signature | None = None
    #: Bounds on the images an image model decodes for one call.
    images: ImageLimits = ImageLimits()


@dataclass(frozen=True)
class ArtifactInfo:
    """What the registry records of an uploaded artifact once a runtime recognised it."""

    framework: str
    signature: Signature
    task: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    #: How the version is served until an owner says otherwise; ``None``: the default.
    deployment: DeploymentSpec | None = None


class Runtime(abc.ABC):
    """One framework's adapter, and its description: what files it recognises, what
    V2 platform its models report, what jobs can do with them. Adding a runtime is
    its own module plus one line of ``maas.runtimes.catalog``'s table."""

    framework: ClassVar[str]
    #: Whether ``predict`` releases the GIL (threads then scale; otherwise processes do).
    releases_gil: ClassVar[bool] = False
    #: Whether it must run in the serving process (its scheduler drives it directly).
    in_process_only: ClassVar[bool] = False
    #: The V2 metadata ``platform`` of its models; empty: the framework's name.
    v2_platform: ClassVar[str] = ""
    #: Whether its files can run code, so that only a server trusting them accepts them.
    needs_trust: ClassVar[bool] = False
    #: What an ``optimize`` job can do to its models (``maas.jobs.kinds.optimize``).
    optimize_methods: ClassVar[tuple[str, ...]] = ()
    #: Whether a job (evaluate, optimize's measurements) can load its models in process.
    job_loadable: ClassVar[bool] = False
    #: What a deployment's ``quantize`` may ask of its models at load (``"int8"``).
    quantizations: ClassVar[tuple[str, ...]] = ()

    signature: Signature

    @classmethod
    def recognises(cls, path: Path, filename: str, head: bytes) -> bool:
        """Whether an upload is this runtime's: by content (``head``: its first bytes,
        empty for a directory), the name only breaking ties. Cheap: loads nothing and
        needs none of the runtime's optional dependencies."""
        return False

    @classmethod
    def inspect(cls, path: Path, *, options: LoadOptions) -> ArtifactInfo:
        """Load a recognised upload safely and describe it for the registry."""
        runtime = cls.load(path, options=options)
        try:
            return ArtifactInfo(cls.framework, runtime.signature)
        finally:
            runtime.close()

    @classmethod
    @abc.abstractmethod
    def load(cls, path: Path, *, options: LoadOptions) -> Self:
        """Load the artifact at ``path``; never runs code from it without trust."""

    @abc.abstractmethod
    def _run(self, inputs: dict[str, np.ndarray], outputs: Sequence[str]) -> dict[str, np.ndarray]:
        """Run one checked batch and return the requested outputs."""

    def predict(
        self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Check ``inputs`` against the signature, run, and return the requested outputs."""
        checked, wanted = check_request(self.signature, inputs, outputs)
        return self._run(checked, wanted)

    def run_checked(
        self, inputs: dict[str, np.ndarray], outputs: Sequence[str]
    ) -> dict[str, np.ndarray]:
        """Run a batch ``check_request`` has already checked: serving checks every
        request before it joins a batch, so its instances need not check it twice."""
        return self._run(inputs, outputs)

    def close(self) -> None:  # noqa: B027  # optional hook; most runtimes hold only memory
        """Release what the runtime holds."""


def check_request(
    signature: Signature, inputs: Mapping[str, np.ndarray], outputs: Sequence[str] | None
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Inputs checked and cast against ``signature``, and the output names to compute.

    A function of the signature alone, so serving can check a request before it joins
    a batch, in the process that holds no runtime.
    """
    wanted = _check_outputs(signature, outputs)
    checked = {spec.name: _check_input(spec, inputs) for spec in signature.inputs}
    extra = set(inputs) - set(checked)
    if extra:
        raise InvalidInput(
            f"unknown input {sorted(extra)[0]!r}; this model takes "
            f"{[s.name for s in signature.inputs]}"
        )
    return checked, wanted


def _check_outputs(signature: Signature, outputs: Sequence[str] | None) -> list[str]:
    names = [spec.name for spec in signature.outputs]
    if outputs is None:
        return names
    for name in outputs:
        if name not in names:
            raise InvalidInput(f"unknown output {name!r}; this model has {names}")
    return list(outputs)


def _check_input(spec: TensorSpec, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
    if spec.name not in inputs:
        raise InvalidInput(f"missing input {spec.name!r}")
    array = inputs[spec.name]
    shape = list(array.shape)
    if len(shape) != len(spec.shape) or any(
        want not in (-1, got) for want, got in zip(spec.shape, shape, strict=False)
    ):
        raise ShapeMismatch(
            f"input {spec.name!r}: expected shape {spec.shape}, got {shape}",
            details={"input": spec.name, "expected": spec.shape, "got": shape},
        )
    return _cast(spec, array)


def _cast(spec: TensorSpec, array: np.ndarray) -> np.ndarray:
    """Convert to the declared datatype where no value can change meaning."""
    if spec.datatype == "BYTES":
        if array.dtype != object:
            raise InvalidInput(f"input {spec.name!r} takes BYTES (strings), got numbers")
        return array
    target = DATATYPES[spec.datatype]
    if array.dtype == target:
        return array
    if array.dtype == object or array.dtype.kind in "USV":
        raise InvalidInput(f"input {spec.name!r} takes {spec.datatype}, got strings")
    if target.kind == "f" or np.can_cast(array.dtype, target, casting="safe"):
        return array.astype(target)
    raise InvalidInput(
        f"input {spec.name!r} takes {spec.datatype}; values of this datatype do not fit"
    )


def texts_of(array: np.ndarray, name: str = "text") -> list[str]:
    """The strings of a BYTES tensor of any shape, as UTF-8 text, row-major."""
    texts = []
    for item in array.reshape(-1):
        if isinstance(item, bytes):
            try:
                texts.append(item.decode("utf-8"))
            except UnicodeDecodeError:
                raise InvalidInput(f"input {name!r} holds bytes that are not UTF-8 text") from None
        elif isinstance(item, str):
            texts.append(item)
        else:
            raise InvalidInput(f"input {name!r} takes text (BYTES)")
    return texts
