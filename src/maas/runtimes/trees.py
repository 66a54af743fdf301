"""What XGBoost and LightGBM models share: one signature shape, one way to run.

Both save boosters in their own data formats (JSON/UBJSON, text), never pickle, and
both record the objective and the feature names, so a booster describes itself like
a fitted scikit-learn estimator does; the same signature shape follows, so a client
switching a model between the three sees the same tensors: ``predict`` (class indices
for classifiers, values for regressors) and, where the objective gives probabilities,
``predict_proba``. A booster fitted on a DataFrame takes one ``[-1, 1]`` input per
column, as ``maas.runtimes.sklearn`` does; the columns are stacked here into the
matrix the booster reads, which needs no pandas.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from maas.errors import UnsupportedArtifact
from maas.protocols.signature import Signature, TensorSpec
from maas.runtimes.base import ArtifactInfo, LoadOptions, Runtime

__all__ = ["LABELS", "PROBABILITIES", "VALUES", "TreeModel", "TreeRuntime", "affinity_threads"]

#: What a booster's raw predictions are, by objective.
PROBABILITIES = "probabilities"  # of the positive class ([n]) or of each class ([n, K])
LABELS = "labels"  # class indices already (xgboost multi:softmax, binary:hinge)
VALUES = "values"  # a regression, a ranking score, a raw margin


def affinity_threads() -> int:
    """The CPUs this process may run on (``taskset``, a container's CPU set), which
    the boosters' own defaults (every core of the machine) overcount."""
    return len(os.sched_getaffinity(0))


@dataclass(frozen=True, slots=True)
class TreeModel:
    """What a booster's file says of it, enough for the signature and the outputs."""

    kind: str  # PROBABILITIES, LABELS or VALUES
    n_features: int
    n_classes: int  # 0 for VALUES
    #: The DataFrame columns it was fitted on, in order; ``None`` for an array.
    columns: tuple[str, ...] | None
    #: The input datatype the booster computes in (its thresholds' precision).
    datatype: str

    @property
    def task(self) -> str:
        return "regression" if self.kind == VALUES else "classification"

    def signature(self) -> Signature:
        if self.columns is not None:
            inputs = [
                TensorSpec(name=name, datatype=self.datatype, shape=[-1, 1])
                for name in self.columns
            ]
        else:
            inputs = [TensorSpec(name="input", datatype=self.datatype, shape=[-1, self.n_features])]
        if self.kind == VALUES:
            outputs = [TensorSpec(name="predict", datatype="FP64", shape=[-1])]
        else:
            outputs = [TensorSpec(name="predict", datatype="INT64", shape=[-1])]
        if self.kind == PROBABILITIES:
            outputs.append(
                TensorSpec(name="predict_proba", datatype="FP64", shape=[-1, self.n_classes])
            )
        return Signature(inputs=inputs, outputs=outputs)

    def features(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        """The matrix the booster reads: the one input, or the columns side by side."""
        if self.columns is None:
            return inputs["input"]
        return np.column_stack([inputs[name].reshape(-1) for name in self.columns])

    def outputs(self, raw: np.ndarray, wanted: Sequence[str]) -> dict[str, np.ndarray]:
        """The requested outputs from the booster's raw predictions."""
        if self.kind == VALUES:
            return {"predict": np.asarray(raw, dtype=np.float64)}
        if self.kind == LABELS:
            return {"predict": np.asarray(raw).reshape(-1).astype(np.int64)}
        proba = np.asarray(raw, dtype=np.float64)
        if proba.ndim == 1:  # a binary objective gives the positive class's probability
            proba = np.column_stack([1.0 - proba, proba])
        result = {"predict": proba.argmax(axis=1).astype(np.int64), "predict_proba": proba}
        return {name: result[name] for name in wanted}


class TreeRuntime(Runtime):
    """A booster described by a ``TreeModel``: what the registry records of it.

    An upload is parsed in a child process before the server's own process loads it:
    the boosters' C++ parsers do not all fail cleanly (LightGBM 4.7 aborts the process,
    ``std::terminate``, on a truncated model), and a damaged upload must be a 400, not
    a dead server. Serving loads only files that passed (the store checks their digest).
    """

    model: TreeModel
    #: The library's name in messages, and a statement loading ``sys.argv[1]`` with it.
    library: ClassVar[str]
    parse_statement: ClassVar[str]

    @classmethod
    def inspect(cls, path: Path, *, options: LoadOptions) -> ArtifactInfo:
        cls.parse_in_child(path)
        runtime = cls.load(path, options=options)
        model = runtime.model
        details = {"objective_kind": model.kind, "features": model.n_features}
        return ArtifactInfo(cls.framework, runtime.signature, model.task, details)

    @classmethod
    def parse_in_child(cls, path: Path) -> None:
        result = subprocess.run(
            [sys.executable, "-c", cls.parse_statement, str(path)],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if result.returncode == 0:
            return
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        fatal = [line for line in lines if "Fatal" in line or "Error" in line]
        reason = (fatal or lines or [f"exit status {result.returncode}"])[-1][:200]
        raise UnsupportedArtifact(f"not a readable {cls.library} model file ({reason})")
