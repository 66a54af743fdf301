"""LightGBM boosters from the text file ``Booster.save_model`` writes (``.txt``).

The text format is LightGBM's own: a header of ``key=value`` lines (the objective, the
feature names), then the trees, parsed by its C++ library; nothing in it is code,
unlike a pickled ``LGBMClassifier``, which stays refused. The booster keeps class
indices, not the labels an ``LGBMClassifier`` was fitted on, so ``predict`` returns
indices (the order of ``classes_``). Predictions run in the library (through ctypes,
which releases the GIL), so serving runs them in threads.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np

from maas.errors import InvalidInput, RuntimeFailure, UnsupportedArtifact
from maas.runtimes.base import LoadOptions
from maas.runtimes.trees import PROBABILITIES, VALUES, TreeModel, TreeRuntime, affinity_threads

__all__ = ["LightGBMRuntime"]

_HEADS = (b"tree\nversion=v", b"tree\r\nversion=v")
#: The names LightGBM gives the columns of an array (a DataFrame's are its own).
_ARRAY_COLUMN = re.compile(r"Column_\d+")
_CLASSIFIERS = {"binary": 2, "multiclass": 0, "multiclassova": 0}


def _header(path: Path) -> dict[str, str]:
    """The ``key=value`` lines before the first tree."""
    fields: dict[str, str] = {}
    with path.open("r", encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if line.startswith("Tree="):
                break
            key, sep, value = line.rstrip("\r\n").partition("=")
            if sep:
                fields[key] = value
    return fields


def _describe(path: Path, booster: Any) -> TreeModel:
    header = _header(path)
    objective = header.get("objective", "").split()
    name = objective[0] if objective else ""
    if booster.pandas_categorical:
        raise UnsupportedArtifact(
            "the booster was fitted on pandas categorical columns, which maas does not "
            "serve from LightGBM files; encode them as numbers, or export the model to ONNX"
        )
    names = [str(n) for n in booster.feature_name()]
    columns = None if all(_ARRAY_COLUMN.fullmatch(n) for n in names) else tuple(names)
    if name in _CLASSIFIERS:
        n_classes = _CLASSIFIERS[name] or int(header.get("num_class", "0"))
        kind = PROBABILITIES
    else:
        n_classes, kind = 0, VALUES
    return TreeModel(
        kind=kind,
        n_features=booster.num_feature(),
        n_classes=n_classes,
        columns=columns,
        datatype="FP64",  # LightGBM's thresholds are doubles
    )


class LightGBMRuntime(TreeRuntime):
    framework: ClassVar[str] = "lightgbm"
    releases_gil: ClassVar[bool] = True
    v2_platform: ClassVar[str] = "lightgbm"
    library: ClassVar[str] = "LightGBM"
    parse_statement: ClassVar[str] = (
        "import sys, lightgbm; lightgbm.Booster(model_file=sys.argv[1])"
    )

    def __init__(self, booster: Any, model: TreeModel, threads: int) -> None:
        self._booster = booster
        self._threads = threads
        self.model = model
        self.signature = model.signature()

    @classmethod
    def recognises(cls, path: Path, filename: str, head: bytes) -> bool:
        return path.is_file() and head.startswith(_HEADS)

    @classmethod
    def load(cls, path: Path, *, options: LoadOptions) -> Self:
        import lightgbm

        try:
            booster = lightgbm.Booster(model_file=str(path))
            model = _describe(path, booster)
        except lightgbm.basic.LightGBMError as exc:
            reason = str(exc).strip()[:200]
            raise UnsupportedArtifact(f"not a readable LightGBM model file ({reason})") from None
        except ValueError as exc:
            raise UnsupportedArtifact(
                f"the LightGBM model's header is not understood ({type(exc).__name__})"
            ) from None
        return cls(booster, model, options.threads or affinity_threads())

    def _run(self, inputs: dict[str, np.ndarray], outputs: Sequence[str]) -> dict[str, np.ndarray]:
        import lightgbm

        features = self.model.features(inputs)
        try:
            raw = self._booster.predict(features, num_threads=self._threads)
        except lightgbm.basic.LightGBMError as exc:
            raise InvalidInput(f"the model refused the input: {str(exc)[:200]}") from None
        except Exception as exc:
            raise RuntimeFailure(f"the model failed: {type(exc).__name__}") from None
        return self.model.outputs(raw, outputs)
