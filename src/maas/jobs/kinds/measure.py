"""Measuring a model version in process: outputs on a dataset, latency, quality.

Versions are loaded through the same runtimes that serve them (``maas.runtimes``), so
the latency and the outputs measured here are the served ones, without HTTP.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from maas.errors import InvalidSpec
from maas.jobs.kinds.data import Frame, normalise_labels
from maas.jobs.kinds.metrics import classification_metrics, regression_metrics
from maas.protocols.signature import Signature
from maas.registry.archives import is_archive, safe_extract
from maas.runtimes.base import LoadOptions, Runtime
from maas.runtimes.catalog import load_runtime

__all__ = ["Measured", "inputs_for", "latency", "load", "measure", "task_metrics"]

_BATCH = 256
_LATENCY_BUDGET_S = 1.5
_LATENCY_MAX_CALLS = 300


def load(framework: str, path: Path, threads: int, scratch: Path) -> Runtime:
    """A runtime for the version, as serving loads it; a packed model directory (a
    transformers or an ONNX text model) is unpacked into ``scratch`` first."""
    if is_archive(path):
        target = scratch / f"unpacked-{path.name}"
        if not target.is_dir():
            safe_extract(path, target)
        entries = [p for p in target.iterdir() if not p.name.startswith(".")]
        path = entries[0] if len(entries) == 1 and entries[0].is_dir() else target
    return load_runtime(framework, path, LoadOptions(threads=threads))


def inputs_for(
    signature: Signature, frame: Frame, text_column: str | None, features: list[str] | None
) -> tuple[str, np.ndarray]:
    """The model's one input, built from the dataset: text or a numeric matrix."""
    spec = signature.inputs[0]
    if spec.datatype == "BYTES":
        if text_column is None:
            raise InvalidSpec("this model takes text: set text_column")
        texts = np.array([t.encode() for t in frame.texts(text_column)], dtype=object)
        return spec.name, texts.reshape(-1, 1) if len(spec.shape) == 2 else texts
    if features is None:
        raise InvalidSpec("this model takes numeric features: set features")
    matrix = frame.features(features)
    return spec.name, matrix.astype(np.float32) if spec.datatype == "FP32" else matrix


def _run_all(runtime: Runtime, name: str, data: np.ndarray) -> dict[str, np.ndarray]:
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(data), _BATCH):
        out = runtime.predict({name: data[start : start + _BATCH]})
        for key, value in out.items():
            parts.setdefault(key, []).append(np.asarray(value))
    return {key: np.concatenate(values) for key, values in parts.items()}


def latency(
    runtime: Runtime,
    name: str,
    data: np.ndarray,
    batch: int,
    budget_s: float = _LATENCY_BUDGET_S,
) -> dict[str, float]:
    """p50 and p99 of one call at ``batch`` rows, over as many calls as fit a budget."""
    rows = np.resize(np.arange(len(data)), max(batch, 1))
    sample = data[rows]
    runtime.predict({name: sample})  # warm-up
    times: list[float] = []
    deadline = time.perf_counter() + budget_s
    while len(times) < _LATENCY_MAX_CALLS and (len(times) < 5 or time.perf_counter() < deadline):
        started = time.perf_counter()
        runtime.predict({name: sample})
        times.append((time.perf_counter() - started) * 1000)
    return {
        "p50_ms": round(float(np.percentile(times, 50)), 4),
        "p99_ms": round(float(np.percentile(times, 99)), 4),
        "calls": len(times),
    }


def _labels_output(outputs: dict[str, np.ndarray]) -> np.ndarray | None:
    for key in ("predict", "label", "output_label"):
        if key in outputs:
            return outputs[key]
    return None


def _scores_output(outputs: dict[str, np.ndarray]) -> np.ndarray | None:
    for key, value in outputs.items():
        if "prob" in key and value.dtype.kind == "f":
            return value.astype(np.float64)
    floats = [v for v in outputs.values() if v.dtype.kind == "f"]
    return floats[0].astype(np.float64) if len(floats) == 1 else None


@dataclass
class Measured:
    labels: np.ndarray | None  # normalised to strings
    scores: np.ndarray | None  # probabilities, logits, embeddings or regression values
    raw_labels: np.ndarray | None


def measure(runtime: Runtime, name: str, data: np.ndarray, task: str | None = None) -> Measured:
    """Outputs on all of ``data``; ``task`` ("classification" or "regression") settles
    models whose float ``predict`` could be either (else a float label is a value). An
    embedder's vectors are compared as they are, never read as class scores."""
    outputs = _run_all(runtime, name, data)
    if "embedding" in outputs:
        vectors = outputs["embedding"].astype(np.float64)
        return Measured(labels=None, scores=vectors, raw_labels=None)
    labels = _labels_output(outputs)
    scores = _scores_output(outputs)
    regression = task == "regression" or (
        task is None and labels is not None and labels.dtype.kind == "f"
    )
    if regression and labels is not None:
        return Measured(labels=None, scores=labels.astype(np.float64).ravel(), raw_labels=None)
    if labels is None and scores is not None and scores.ndim == 2 and scores.shape[1] > 1:
        labels = np.argmax(scores, axis=1)
    return Measured(
        labels=normalise_labels(labels) if labels is not None else None,
        scores=scores,
        raw_labels=labels,
    )


def task_metrics(measured: Measured, truth: np.ndarray) -> tuple[str, dict[str, float]]:
    """``("classification" | "regression", metrics)`` of outputs against the labels."""
    if measured.labels is not None:
        y_true = normalise_labels(truth)
        classes = sorted(set(y_true.tolist()) | set(measured.labels.tolist()))
        scores = measured.scores
        if scores is not None and (scores.ndim != 2 or scores.shape[1] != len(classes)):
            scores = None
        return "classification", classification_metrics(y_true, measured.labels, scores, classes)
    if measured.scores is None:
        raise InvalidSpec("the model's outputs cannot be scored against the target")
    return "regression", regression_metrics(truth.astype(np.float64), measured.scores.ravel())


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Mean cosine similarity of matching rows."""
    a2, b2 = a.reshape(len(a), -1), b.reshape(len(b), -1)
    norms = np.linalg.norm(a2, axis=1) * np.linalg.norm(b2, axis=1)
    return float(np.mean(np.sum(a2 * b2, axis=1) / np.clip(norms, 1e-12, None)))


def comparison(before: Measured, after: Measured) -> dict[str, Any]:
    """How far the optimized outputs are from the original ones, with no labels needed."""
    found: dict[str, Any] = {}
    if before.labels is not None and after.labels is not None:
        found["agreement"] = float(np.mean(before.labels == after.labels))
    b, a = before.scores, after.scores
    if b is not None and a is not None and b.shape == a.shape:
        found["cosine"] = cosine(b, a)
        found["max_abs_diff"] = float(np.max(np.abs(b - a)))
    return found
