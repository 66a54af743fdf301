"""The one registration table of runtimes, and what an uploaded file is.

Each runtime class describes itself (``maas.runtimes.base.Runtime``: the files it
recognises, its V2 platform, what jobs can do with it); this table only says where
each lives, which extra provides its dependencies, and in what order uploads are
matched. Framework modules import their libraries on first use, so the core works
without the optional extras; a missing one raises ``MissingExtra`` naming the extra.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from maas.errors import MissingExtra, UnsupportedArtifact, UntrustedArtifact
from maas.protocols.signature import Signature
from maas.runtimes.base import ArtifactInfo, LoadOptions, Runtime

__all__ = [
    "ACCEPTED",
    "ArtifactInfo",
    "describe",
    "frameworks",
    "inspect_artifact",
    "load_runtime",
    "runtime_class",
    "v2_platform",
]


@dataclass(frozen=True, slots=True)
class _Entry:
    module: str
    cls: str
    extra: str  # the extra that provides its dependencies
    probes: tuple[str, ...]  # modules that must be installed for it to work


#: framework -> where its runtime lives. The order is the order uploads are matched
#: in: an ONNX image or text directory before any model directory, skops before pickle.
_RUNTIMES: dict[str, _Entry] = {
    "onnx-image": _Entry(
        "maas.runtimes.onnx_image", "OnnxImageRuntime", "vision", ("onnxruntime", "PIL")
    ),
    "onnx-text": _Entry(
        "maas.runtimes.hf.onnx_text", "OnnxTextRuntime", "onnx", ("onnxruntime", "tokenizers")
    ),
    # Before transformers, which claims every directory: a CTranslate2 Whisper one is
    # told apart by its model.bin header.
    "whisper": _Entry(
        "maas.runtimes.audio.whisper", "WhisperRuntime", "audio", ("faster_whisper", "av")
    ),
    # A GGUF file is llama.cpp's where its extra is installed, else transformers'.
    "llama.cpp": _Entry(
        "maas.runtimes.llamacpp.runtime", "LlamaCppRuntime", "gguf", ("llama_cpp",)
    ),
    "transformers": _Entry(
        "maas.runtimes.hf.runtime", "TransformersRuntime", "llm", ("transformers",)
    ),
    "xgboost": _Entry("maas.runtimes.xgboost", "XGBoostRuntime", "xgboost", ("xgboost",)),
    "lightgbm": _Entry("maas.runtimes.lightgbm", "LightGBMRuntime", "lightgbm", ("lightgbm",)),
    "torch-export": _Entry("maas.runtimes.pytorch", "TorchExportRuntime", "torch", ("torch",)),
    "torchscript": _Entry("maas.runtimes.pytorch", "TorchScriptRuntime", "torch", ("torch",)),
    # Before keras (a .keras file is a zip too) and the pickle runtime: only says why not.
    "torch-save": _Entry("maas.runtimes.pytorch", "TorchSaveRefusal", "core", ()),
    "keras": _Entry("maas.runtimes.keras", "KerasRuntime", "keras", ("keras", "torch", "h5py")),
    "sklearn": _Entry("maas.runtimes.sklearn", "SklearnRuntime", "core", ("sklearn",)),
    "pickle": _Entry("maas.runtimes.sklearn", "PickleRuntime", "core", ("sklearn",)),
    "onnx": _Entry("maas.runtimes.onnx", "OnnxRuntime", "onnx", ("onnxruntime",)),
    "espeak-ng": _Entry("maas.runtimes.audio.espeak", "EspeakRuntime", "core", ()),
}

ACCEPTED = (
    ".skops (scikit-learn), .onnx, .gguf, a transformers model directory, an ONNX text "
    "or ONNX image model directory (as .tar or .zip), XGBoost .json/.ubj and LightGBM .txt "
    "(save_model), "
    "PyTorch .pt2 (torch.export.save) and .pt (torch.jit.save, with a declared "
    "signature), Keras 3 .keras; "
    ".pkl/.pickle/.joblib on a server with --trust-pickle; "
    "a CTranslate2 Whisper model directory (as .tar or .zip); an espeak-ng voice model (.json)"
)

#: What to do with a model in a format not served: ONNX runs every framework's models.
PORTABLE = (
    "export the model to ONNX (torch.onnx.export, tf2onnx, skl2onnx, onnxmltools), "
    "the portable format maas serves from any framework"
)


def frameworks() -> list[str]:
    """Every registered framework, in matching order."""
    return list(_RUNTIMES)


def describe(framework: str) -> type[Runtime] | None:
    """The runtime class of ``framework``, for what it says of itself (platform, job
    capabilities); importing it needs none of its optional dependencies."""
    entry = _RUNTIMES.get(framework)
    if entry is None:
        return None
    runtime: type[Runtime] = getattr(importlib.import_module(entry.module), entry.cls)
    return runtime


def runtime_class(framework: str) -> type[Runtime]:
    """The runtime class of ``framework``, once its optional dependencies are found."""
    entry = _RUNTIMES.get(framework)
    if entry is None:
        raise UnsupportedArtifact(f"no runtime for framework {framework!r}")
    # Found, not imported: a server whose scikit-learn models run in worker processes
    # never needs scikit-learn (and what it drags in, 150 MB) in its own process.
    if any(importlib.util.find_spec(probe) is None for probe in entry.probes):
        raise MissingExtra(framework, entry.extra)
    runtime = describe(framework)
    assert runtime is not None
    return runtime


def load_runtime(framework: str, path: Path, options: LoadOptions) -> Runtime:
    return runtime_class(framework).load(path, options=options)


def v2_platform(framework: str) -> str:
    """The V2 metadata ``platform`` of a framework's models."""
    runtime = describe(framework)
    return runtime.v2_platform if runtime is not None and runtime.v2_platform else framework


def inspect_artifact(
    path: Path,
    filename: str,
    *,
    trust_pickle: bool,
    cache_dir: Path | None = None,
    declared: Signature | None = None,
) -> ArtifactInfo:
    """Detect the framework by content (the extension only breaks ties) and read the
    signature by loading the artifact safely. Nothing from an untrusted file runs.

    ``path`` is a file, or the directory an uploaded archive was unpacked into;
    ``declared`` the signature given at push, for formats that record none.
    """
    head = b""
    if path.is_file():
        with path.open("rb") as handle:
            head = handle.read(64)
    for framework in _RUNTIMES:
        runtime = describe(framework)
        assert runtime is not None
        if not runtime.recognises(path, filename, head):
            continue
        if runtime.needs_trust and not trust_pickle:
            raise UntrustedArtifact()
        runtime_class(framework)  # raises MissingExtra without its extra
        options = LoadOptions(
            trust_pickle=runtime.needs_trust, cache_dir=cache_dir, signature=declared
        )
        return runtime.inspect(path, options=options)
    raise UnsupportedArtifact(
        f"unrecognised model file; accepted: {ACCEPTED}. Otherwise {PORTABLE}",
        details={"accepted": ACCEPTED, "portable": PORTABLE},
    )
