"""scikit-learn models from ``.skops`` (safe) or, on a trusting server, pickle/joblib.

skops lists the types a file would instantiate beyond those it trusts by default;
only the reviewed classes of ``maas.runtimes.skops_trust`` are accepted among them.
Anything else (a user class, ``builtins.eval``, a scikit-learn function…) is refused,
and the loaded model's index arrays are checked before it may run.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np

from maas.errors import RuntimeFailure, UnsupportedArtifact, UntrustedArtifact
from maas.protocols.signature import Signature, TensorSpec
from maas.runtimes.base import ArtifactInfo, LoadOptions, Runtime
from maas.runtimes.skops_trust import REVIEWED_TYPES, check_structures

__all__ = ["SklearnRuntime", "estimator_signature", "load_estimator"]

_PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib")


def _load_skops(path: Path) -> Any:
    import skops.io

    try:
        untrusted = skops.io.get_untrusted_types(file=path)
    except Exception as exc:  # a broken zip or schema
        raise UnsupportedArtifact(f"not a readable .skops file ({type(exc).__name__})") from None
    refused = [name for name in untrusted if name not in REVIEWED_TYPES]
    if refused:
        raise UntrustedArtifact(
            "the .skops file contains types maas does not trust (only scikit-learn "
            "estimators, numpy and scipy data and reviewed classes; no functions)",
            details={"types": refused[:20]},
        )
    try:
        estimator = skops.io.load(path, trusted=untrusted)
    except Exception as exc:  # a file that lists trusted types but does not build
        reason = type(exc).__name__
        raise UnsupportedArtifact(f"could not load the .skops file ({reason})") from None
    check_structures(estimator)
    return estimator


def _load_pickle(path: Path) -> Any:
    import joblib

    try:
        return joblib.load(path)
    except Exception:
        with path.open("rb") as handle:
            return pickle.load(handle)  # only with the operator's --trust-pickle


def is_skops(path: Path) -> bool:
    import zipfile

    if not zipfile.is_zipfile(path):
        return False
    try:  # is_zipfile only finds an end record; the directory it points to may be broken
        with zipfile.ZipFile(path) as archive:
            return "schema.json" in archive.namelist()
    except zipfile.BadZipFile:
        return False


def load_estimator(path: Path, *, trust_pickle: bool) -> Any:
    if is_skops(path):
        return _load_skops(path)
    if not trust_pickle:
        raise UntrustedArtifact()
    try:
        return _load_pickle(path)
    except Exception as exc:
        raise UnsupportedArtifact(f"could not unpickle the file ({type(exc).__name__})") from None


def _label_datatype(classes: np.ndarray) -> str:
    if classes.dtype.kind in "iu":
        return "INT64"
    if classes.dtype.kind == "b":
        return "BOOL"
    if classes.dtype.kind == "f":
        return "FP64"
    return "BYTES"


def takes_text(estimator: Any) -> bool:
    """A text model: a vectorizer (TF-IDF, counts, hashing) first, taking raw strings."""
    first = estimator.steps[0][1] if hasattr(estimator, "steps") else estimator
    return hasattr(first, "build_analyzer")


def estimator_signature(estimator: Any) -> Signature:
    if not hasattr(estimator, "predict"):
        raise UnsupportedArtifact(f"{type(estimator).__name__} has no predict method")
    if takes_text(estimator):
        inputs = [TensorSpec(name="input", datatype="BYTES", shape=[-1])]
    else:
        n_features = getattr(estimator, "n_features_in_", None)
        inputs = [TensorSpec(name="input", datatype="FP64", shape=[-1, int(n_features or -1)])]
    classes = getattr(estimator, "classes_", None)
    if classes is None:
        return Signature(
            inputs=inputs, outputs=[TensorSpec(name="predict", datatype="FP64", shape=[-1])]
        )
    classes = np.asarray(classes)
    outputs = [TensorSpec(name="predict", datatype=_label_datatype(classes), shape=[-1])]
    if hasattr(estimator, "predict_proba"):
        outputs.append(TensorSpec(name="predict_proba", datatype="FP64", shape=[-1, len(classes)]))
    return Signature(inputs=inputs, outputs=outputs)


def estimator_task(estimator: Any) -> str | None:
    if hasattr(estimator, "classes_"):
        return "classification"
    if hasattr(estimator, "predict"):
        return "regression"
    return None


class SklearnRuntime(Runtime):
    framework: ClassVar[str] = "sklearn"
    releases_gil: ClassVar[bool] = False
    v2_platform: ClassVar[str] = "sklearn"
    optimize_methods: ClassVar[tuple[str, ...]] = ("onnx", "prune")
    job_loadable: ClassVar[bool] = True

    def __init__(self, estimator: Any) -> None:
        self.estimator = estimator
        self.signature = estimator_signature(estimator)

    @classmethod
    def load(cls, path: Path, *, options: LoadOptions) -> Self:
        return cls(load_estimator(path, trust_pickle=options.trust_pickle))

    @classmethod
    def recognises(cls, path: Path, filename: str, head: bytes) -> bool:
        return path.is_file() and is_skops(path)

    @classmethod
    def inspect(cls, path: Path, *, options: LoadOptions) -> ArtifactInfo:
        runtime = cls.load(path, options=options)
        estimator = runtime.estimator
        details = {"estimator": type(estimator).__name__}
        return ArtifactInfo(cls.framework, runtime.signature, estimator_task(estimator), details)

    def _run(self, inputs: dict[str, np.ndarray], outputs: Sequence[str]) -> dict[str, np.ndarray]:
        features: Any = inputs["input"]
        if features.dtype == object:  # text: BYTES arrive as bytes, vectorizers want str
            features = [
                v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
                for v in features.ravel()
            ]
        result: dict[str, np.ndarray] = {}
        try:
            for name in outputs:
                value = np.asarray(getattr(self.estimator, name)(features))
                if value.dtype.kind in "USO":
                    value = np.array([str(v).encode() for v in value.ravel()], dtype=object)
                result[name] = value
        except ValueError as exc:  # scikit-learn's word for bad input values (NaN, …)
            from maas.errors import InvalidInput

            raise InvalidInput(f"the model refused the input: {str(exc)[:200]}") from None
        except Exception as exc:
            raise RuntimeFailure(f"the model failed: {type(exc).__name__}") from None
        return result


class PickleRuntime(SklearnRuntime):
    """The same adapter, named apart so registries show which versions are pickles."""

    framework: ClassVar[str] = "pickle"
    needs_trust: ClassVar[bool] = True
    optimize_methods: ClassVar[tuple[str, ...]] = ()
    job_loadable: ClassVar[bool] = False

    @classmethod
    def recognises(cls, path: Path, filename: str, head: bytes) -> bool:
        # Protocol 2+ pickles start with 0x80; joblib's compressed files with zlib/gzip/xz
        # magic; the extension catches the rest.
        return path.is_file() and (
            filename.lower().endswith(_PICKLE_SUFFIXES)
            or head[:1] == b"\x80"
            or head[:2] in (b"\x78\x9c", b"\x78\x01", b"\x78\xda", b"\x1f\x8b")
            or head[:6] == b"\xfd7zXZ\x00"
        )
