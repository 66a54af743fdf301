"""XGBoost boosters from the files ``save_model`` writes: JSON (``.json``) or UBJSON
(``.ubj``).

Both are XGBoost's own data formats, parsed by its C++ library into trees and
parameters: nothing in them is code, unlike a pickled ``XGBClassifier``, which stays
refused. The objective in the file says whether the booster classifies (its
probabilities become ``predict_proba``) or regresses. Predictions run in the library
(through ctypes, which releases the GIL), so serving runs them in threads.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np

from maas.errors import InvalidInput, RuntimeFailure, UnsupportedArtifact
from maas.runtimes.base import LoadOptions
from maas.runtimes.trees import (
    LABELS,
    PROBABILITIES,
    VALUES,
    TreeModel,
    TreeRuntime,
    affinity_threads,
)

__all__ = ["XGBoostRuntime"]

#: A JSON model is one object whose first key is ``learner`` (``save_model`` writes it
#: first); a UBJSON one opens with ``{``, the key's length as a typed integer, the key.
_LEARNER = b"learner"

_PROBABILITY_OBJECTIVES = ("binary:logistic", "multi:softprob")
_LABEL_OBJECTIVES = ("multi:softmax", "binary:hinge")


def _is_xgboost(head: bytes) -> bool:
    text = head.lstrip()
    if text.startswith(b"{") and text[1:].lstrip().startswith(b'"' + _LEARNER + b'"'):
        return True
    if head[:1] != b"{" or head[1:2] not in (b"i", b"U", b"I", b"l", b"L"):
        return False
    width = {b"i": 1, b"U": 1, b"I": 2, b"l": 4, b"L": 8}[head[1:2]]
    return head[2 + width : 2 + width + len(_LEARNER)] == _LEARNER


def _first_line(exc: Exception) -> str:
    """XGBoost's messages carry a C++ stack trace after their first line."""
    lines = str(exc).strip().splitlines()
    return lines[0][:200] if lines else type(exc).__name__


def _describe(booster: Any) -> TreeModel:
    """The objective, classes and features the booster's configuration records."""
    learner = json.loads(booster.save_config())["learner"]
    objective = str(learner["objective"]["name"])
    params = learner["learner_model_param"]
    n_classes = int(params.get("num_class", "0") or 0)
    if int(params.get("num_target", "1") or 1) != 1:
        raise UnsupportedArtifact("multi-target XGBoost models are not served; export to ONNX")
    types = booster.feature_types or []
    if any(kind == "c" for kind in types):
        raise UnsupportedArtifact(
            "the booster has categorical features, which maas does not serve from XGBoost "
            "files; encode them as numbers, or export the model to ONNX"
        )
    if objective in _PROBABILITY_OBJECTIVES:
        kind, n_classes = PROBABILITIES, max(n_classes, 2)
    elif objective in _LABEL_OBJECTIVES:
        kind, n_classes = LABELS, max(n_classes, 2)
    else:
        kind, n_classes = VALUES, 0
    names = booster.feature_names
    return TreeModel(
        kind=kind,
        n_features=booster.num_features(),
        n_classes=n_classes,
        columns=tuple(names) if names else None,
        datatype="FP32",  # XGBoost compares features as 32-bit floats
    )


class XGBoostRuntime(TreeRuntime):
    framework: ClassVar[str] = "xgboost"
    releases_gil: ClassVar[bool] = True
    v2_platform: ClassVar[str] = "xgboost"
    library: ClassVar[str] = "XGBoost"
    parse_statement: ClassVar[str] = "import sys, xgboost; xgboost.Booster(model_file=sys.argv[1])"

    def __init__(self, booster: Any, model: TreeModel) -> None:
        self._booster = booster
        self.model = model
        self.signature = model.signature()

    @classmethod
    def recognises(cls, path: Path, filename: str, head: bytes) -> bool:
        return path.is_file() and _is_xgboost(head)

    @classmethod
    def load(cls, path: Path, *, options: LoadOptions) -> Self:
        import xgboost

        try:
            booster = xgboost.Booster(model_file=str(path))
            model = _describe(booster)
        except xgboost.core.XGBoostError as exc:
            raise UnsupportedArtifact(
                f"not a readable XGBoost model file ({_first_line(exc)})"
            ) from None
        except (KeyError, ValueError, TypeError) as exc:
            raise UnsupportedArtifact(
                f"the XGBoost model's configuration is not understood ({type(exc).__name__})"
            ) from None
        booster.set_param({"nthread": options.threads or affinity_threads()})
        return cls(booster, model)

    def _run(self, inputs: dict[str, np.ndarray], outputs: Sequence[str]) -> dict[str, np.ndarray]:
        import xgboost

        features = self.model.features(inputs)
        try:
            raw = self._booster.inplace_predict(features, validate_features=False)
        except xgboost.core.XGBoostError as exc:
            raise InvalidInput(f"the model refused the input: {_first_line(exc)}") from None
        except Exception as exc:
            raise RuntimeFailure(f"the model failed: {type(exc).__name__}") from None
        return self.model.outputs(raw, outputs)
