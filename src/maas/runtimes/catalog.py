"""Which runtime serves which framework, and what an uploaded file is.

Framework modules are imported on first use, so the core works without the optional
extras; a missing one raises ``MissingExtra`` naming the extra to install.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from maas.errors import MissingExtra, UnsupportedArtifact, UntrustedArtifact
from maas.protocols.management import DeploymentSpec
from maas.protocols.signature import Signature
from maas.runtimes.base import LoadOptions, Runtime

__all__ = ["ArtifactInfo", "inspect_artifact", "load_runtime", "runtime_class"]

# framework -> (module, class, extra that provides its dependencies, modules to probe)
_RUNTIMES: dict[str, tuple[str, str, str, tuple[str, ...]]] = {
    "sklearn": ("maas.runtimes.sklearn", "SklearnRuntime", "core", ("sklearn",)),
    "pickle": ("maas.runtimes.sklearn", "PickleRuntime", "core", ("sklearn",)),
    "onnx": ("maas.runtimes.onnx", "OnnxRuntime", "onnx", ("onnxruntime",)),
    "onnx-text": (
        "maas.runtimes.hf.onnx_text",
        "OnnxTextRuntime",
        "onnx",
        ("onnxruntime", "tokenizers"),
    ),
    "transformers": ("maas.runtimes.hf.runtime", "TransformersRuntime", "llm", ("transformers",)),
    "llama.cpp": ("maas.runtimes.llamacpp.runtime", "LlamaCppRuntime", "gguf", ("llama_cpp",)),
}

_PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib")
ACCEPTED = (
    ".skops (scikit-learn), .onnx, .gguf, a transformers model directory or an ONNX text "
    "model directory (as .tar or .zip); "
    ".pkl/.pickle/.joblib on a server with --trust-pickle"
)


@dataclass(frozen=True)
class ArtifactInfo:
    framework: str
    signature: Signature
    task: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    #: How the version is served until an owner says otherwise; ``None``: the default.
    deployment: DeploymentSpec | None = None


def runtime_class(framework: str) -> type[Runtime]:
    try:
        module_name, class_name, extra, probes = _RUNTIMES[framework]
    except KeyError:
        raise UnsupportedArtifact(f"no runtime for framework {framework!r}") from None
    try:
        for probe in probes:
            importlib.import_module(probe)
    except ImportError:
        raise MissingExtra(framework, extra) from None
    runtime: type[Runtime] = getattr(importlib.import_module(module_name), class_name)
    return runtime


def load_runtime(framework: str, path: Path, options: LoadOptions) -> Runtime:
    return runtime_class(framework).load(path, options=options)


def _looks_like_pickle(head: bytes, filename: str) -> bool:
    # Protocol 2+ pickles start with 0x80; joblib's compressed files with zlib/gzip/xz
    # magic; the extension catches the rest.
    return (
        filename.lower().endswith(_PICKLE_SUFFIXES)
        or head[:1] == b"\x80"
        or head[:2] in (b"\x78\x9c", b"\x78\x01", b"\x78\xda", b"\x1f\x8b")
        or head[:6] == b"\xfd7zXZ\x00"
    )


def inspect_artifact(
    path: Path, filename: str, *, trust_pickle: bool, cache_dir: Path | None = None
) -> ArtifactInfo:
    """Detect the framework by content (the extension only breaks ties) and read the
    signature by loading the artifact safely. Nothing from an untrusted file runs.

    ``path`` is a file, or the directory an uploaded archive was unpacked into.
    """
    from maas.runtimes.hf.onnx_text import is_onnx_text_dir
    from maas.runtimes.sklearn import estimator_task, is_skops

    if is_onnx_text_dir(path):
        return _inspect_onnx_text(path)
    if path.is_file() and _is_gguf(path):
        return _inspect_gguf(path, cache_dir)
    if path.is_dir():
        return _inspect_transformers(path, cache_dir)
    with path.open("rb") as handle:
        head = handle.read(16)
    if is_skops(path):
        runtime = runtime_class("sklearn").load(path, options=LoadOptions())
        estimator = runtime.estimator  # type: ignore[attr-defined]  # SklearnRuntime
        return ArtifactInfo(
            "sklearn",
            runtime.signature,
            estimator_task(estimator),
            {"estimator": type(estimator).__name__},
        )
    if _looks_like_pickle(head, filename):
        if not trust_pickle:
            raise UntrustedArtifact()
        runtime = runtime_class("pickle").load(path, options=LoadOptions(trust_pickle=True))
        estimator = runtime.estimator  # type: ignore[attr-defined]  # PickleRuntime
        return ArtifactInfo(
            "pickle",
            runtime.signature,
            estimator_task(estimator),
            {"estimator": type(estimator).__name__},
        )
    if filename.lower().endswith(".onnx") or _is_onnx(path):
        runtime = runtime_class("onnx").load(path, options=LoadOptions(threads=1))
        return ArtifactInfo("onnx", runtime.signature, None, {})
    raise UnsupportedArtifact(f"unrecognised model file; accepted: {ACCEPTED}")


#: Embedding calls are many small batches of texts: batch them by default.
_EMBEDDINGS_BATCHED = DeploymentSpec(max_batch_size=64, max_queue_delay_us=2000)


def _is_gguf(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(4) == b"GGUF"


#: Context of the throw-away instance that reads a pushed GGUF file's details.
_INSPECT_KV_TOKENS = 256


def _inspect_gguf(path: Path, cache_dir: Path | None) -> ArtifactInfo:
    """A GGUF file is served by llama.cpp on its quantized weights; where the ``[gguf]``
    extra is missing but ``[llm]`` is there, transformers dequantizes it as before."""
    try:
        runtime_class("llama.cpp")
    except MissingExtra:
        try:
            runtime_class("transformers")
        except MissingExtra:
            raise MissingExtra("llama.cpp", "gguf") from None
        return _inspect_transformers(path, cache_dir)
    from maas.runtimes.llamacpp.runtime import LlamaCppRuntime

    runtime = LlamaCppRuntime.load(path, options=LoadOptions(kv_cache_tokens=_INSPECT_KV_TOKENS))
    try:
        details = {"format": "gguf", "task": runtime.task, **runtime.details}
        return ArtifactInfo("llama.cpp", runtime.signature, runtime.task, details)
    finally:
        runtime.close()


def _inspect_transformers(path: Path, cache_dir: Path | None) -> ArtifactInfo:
    if path.is_dir() and not (path / "config.json").is_file():
        raise UnsupportedArtifact(
            "the archive holds no config.json at its root: pack a transformers model "
            "directory (save_pretrained) or upload a single model file"
        )
    runtime_class("transformers")  # raises MissingExtra without the [llm] extra
    from maas.runtimes.hf.runtime import TransformersRuntime

    runtime = TransformersRuntime.load(path, options=LoadOptions(cache_dir=cache_dir))
    try:
        details = {"format": "gguf" if path.is_file() else "directory", "task": runtime.task}
        details.update(runtime.details)
        deployment = _EMBEDDINGS_BATCHED if runtime.task == "embeddings" else None
        return ArtifactInfo("transformers", runtime.signature, runtime.task, details, deployment)
    finally:
        runtime.close()


def _inspect_onnx_text(path: Path) -> ArtifactInfo:
    """A transformers text model exported to ONNX (``maas.runtimes.hf.onnx_text``): the
    same task, signature and default batching as the transformers runtime gives it."""
    runtime_class("onnx-text")  # raises MissingExtra without the [onnx] extra
    from maas.runtimes.hf.onnx_text import OnnxTextRuntime

    runtime = OnnxTextRuntime.load(path, options=LoadOptions(threads=1))
    details = {"format": "onnx", "task": runtime.task, **runtime.details}
    deployment = _EMBEDDINGS_BATCHED if runtime.task == "embeddings" else None
    return ArtifactInfo("onnx-text", runtime.signature, runtime.task, details, deployment)


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
