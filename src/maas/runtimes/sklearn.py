"""scikit-learn models from ``.skops`` (safe) or, on a trusting server, pickle/joblib.

skops lists the types a file would instantiate beyond those it trusts by default;
only the reviewed classes of ``maas.runtimes.skops_trust`` are accepted among them.
Anything else (a user class, ``builtins.eval``, a scikit-learn function…) is refused,
and the loaded model's index arrays are checked before it may run.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import pickle
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np

from maas.errors import MissingExtra, RuntimeFailure, UnsupportedArtifact, UntrustedArtifact
from maas.protocols.signature import Signature, TensorSpec
from maas.runtimes.base import ArtifactInfo, LoadOptions, Runtime
from maas.runtimes.skops_trust import REVIEWED_TYPES, check_structures

__all__ = [
    "SklearnRuntime",
    "WithoutTorch",
    "estimator_signature",
    "frame_columns",
    "import_skops",
    "load_estimator",
]

_PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib")
_TORCH = frozenset({"torch"})
#: What importing scikit-learn would load and a model fitted on arrays never uses
#: (pytest: its test helpers import it where it is installed, 6 MB per worker; rich:
#: its progress bars for ``fit``; charset_normalizer: numpy.f2py's reader of Fortran).
_NOT_AT_IMPORT = frozenset(
    {"torch", "pandas", "pyarrow", "pytest", "_pytest", "rich", "charset_normalizer"}
)


class WithoutTorch(importlib.abc.MetaPathFinder):
    """Refuses to import some packages (torch by default), in one thread or in the
    whole process.

    skops, at import, lists scikit-learn's estimators, which imports every sklearn
    package, its torch array-API shim included: with torch installed (the ``[llm]``
    extra) reading a ``.skops`` file would load torch for nothing, about 180 MB and
    seconds (a minute on a loaded machine) per process. scikit-learn also imports
    pandas (and pandas pyarrow) at import when they are installed, about 70 MB that a
    model fitted on arrays never uses. An ``ImportError`` is what that discovery
    expects when a package is absent.
    """

    def __init__(self, thread: int | None = None, names: frozenset[str] = _TORCH) -> None:
        self.thread = thread
        self.names = names

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name.partition(".")[0] in self.names and self.thread in (None, threading.get_ident()):
            raise ImportError(f"{name} is not needed to read scikit-learn models")


def import_skops() -> Any:
    """``skops.io`` (and scikit-learn), imported without torch, and without pandas and
    pyarrow unless something imported them already.

    Only this thread is refused them: other threads may import torch meanwhile. A
    model fitted on a DataFrame imports pandas when it is called
    (``SklearnRuntime._frame``), which scikit-learn finds then through
    ``sys.modules``; scikit-learn's own import-time use of pandas is an ARFF reader
    maas never calls.
    """
    if "skops.io" not in sys.modules:
        names = frozenset(n for n in _NOT_AT_IMPORT if n not in sys.modules)
        blocker = WithoutTorch(threading.get_ident(), names)
        sys.meta_path.insert(0, blocker)
        try:
            import skops.io
        finally:
            sys.meta_path.remove(blocker)
    import skops.io

    return skops.io


def _load_skops(path: Path) -> Any:
    skops_io = import_skops()

    try:
        untrusted = skops_io.get_untrusted_types(file=path)
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
        estimator = skops_io.load(path, trusted=untrusted)
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
    elif (columns := frame_columns(estimator)) is not None:
        inputs = columns
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


def frame_columns(estimator: Any) -> list[TensorSpec] | None:
    """One ``[-1, 1]`` input per column of the DataFrame the model was fitted on (as
    MLServer's pandas codec has it), or ``None`` for a model fitted on an array.

    scikit-learn keeps the column names (``feature_names_in_``) but not their dtypes;
    a column is BYTES where the step that reads it learned strings (an encoder's
    categories, an imputer's fill values, a vectorizer), FP64 otherwise.
    """
    names = getattr(estimator, "feature_names_in_", None)
    if names is None:
        return None
    if importlib.util.find_spec("pandas") is None:
        raise MissingExtra("scikit-learn models fitted on a DataFrame", "pandas")
    datatypes = _column_datatypes(estimator)
    return [
        TensorSpec(name=str(name), datatype=datatypes.get(str(name), "FP64"), shape=[-1, 1])
        for name in names
    ]


def _column_datatypes(estimator: Any) -> dict[str, str]:
    first = estimator.steps[0][1] if hasattr(estimator, "steps") else estimator
    indices = getattr(first, "_transformer_to_input_indices", None)  # a ColumnTransformer
    names = getattr(first, "feature_names_in_", None)
    if not indices or names is None:
        return {}
    steps = dict(getattr(first, "named_transformers_", {}))
    datatypes = {}
    for part, columns in indices.items():
        datatype = _reads_as(steps.get(part))
        for index in columns:
            datatypes[str(names[index])] = datatype
    return datatypes


def _reads_as(transformer: Any) -> str:
    """The V2 datatype a fitted transformer (or the first telling step of a pipeline)
    was given: strings for what learned strings, numbers otherwise."""
    steps = [step for _, step in getattr(transformer, "steps", [(None, transformer)])]
    for step in steps:
        if hasattr(step, "build_analyzer"):
            return "BYTES"
        for learned in ("categories_", "statistics_"):
            values = getattr(step, learned, None)
            if values is None:
                continue
            arrays = values if isinstance(values, list) else [values]
            if any(np.asarray(a).dtype.kind in "OUS" for a in arrays):
                return "BYTES"
            return "FP64"
    return "FP64"


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
        #: The DataFrame columns the model takes, one input each; empty for arrays.
        self.columns = [] if frame_columns(estimator) is None else self.signature.inputs

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
        features: Any = self._frame(inputs) if self.columns else inputs["input"]
        if isinstance(features, np.ndarray) and features.dtype == object:
            features = _strings(features)  # text: BYTES arrive as bytes, vectorizers want str
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

    def _frame(self, inputs: dict[str, np.ndarray]) -> Any:
        """The DataFrame the model was fitted on, column by column from the inputs."""
        import pandas as pd

        return pd.DataFrame(
            {
                spec.name: _strings(inputs[spec.name])
                if spec.datatype == "BYTES"
                else inputs[spec.name].ravel()
                for spec in self.columns
            }
        )


def _strings(values: np.ndarray) -> list[str]:
    return [
        v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in values.ravel()
    ]


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
