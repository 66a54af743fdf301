"""``optimize``: a new, smaller or faster version, with a report of what it cost.

The report measures the source and the result the same way, in process, through the
serving runtimes: artifact size, latency p50/p99 at batch 1 and 32, and quality on
the held-out dataset, as the task metric when the dataset has labels and always as
agreement and cosine similarity of the two versions' outputs. ``quality_drop`` is the
number promotion checks against the server's threshold.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from maas.jobs.kinds import shrink
from maas.jobs.kinds.data import Frame, load_frame
from maas.jobs.kinds.measure import (
    Measured,
    comparison,
    inputs_for,
    latency,
    load,
    measure,
    task_metrics,
)
from maas.jobs.reporter import Reporter
from maas.protocols.jobs import OptimizeSpec
from maas.protocols.signature import Signature
from maas.runtimes.base import Runtime

__all__ = ["Candidate", "build_report", "run_optimize"]

_PRIMARY = ("accuracy", "r2")


def _apply(
    spec: OptimizeSpec, framework: str, source: Path, sample: Any, work_dir: Path
) -> tuple[Path, str, dict[str, Any]]:
    if framework == "sklearn" and spec.method == "onnx":
        out = work_dir / "model.onnx"
        return out, "onnx", shrink.sklearn_to_onnx_file(source, sample, out)
    if framework == "sklearn" and spec.method == "prune":
        out = work_dir / "model.pruned.skops"
        return out, "sklearn", shrink.sklearn_prune(source, spec.sparsity, out)
    if framework == "onnx" and spec.method == "quantize_int8":
        out = work_dir / "model.int8.onnx"
        return out, "onnx", shrink.onnx_quantize_int8(source, out)
    if framework == "onnx" and spec.method == "prune":
        out = work_dir / "model.pruned.onnx"
        return out, "onnx", shrink.onnx_prune(source, spec.sparsity, out)
    if framework == "onnx-text":  # the graph changes; tokenizer and manifest stay
        from maas.jobs.kinds.hf_optimize import rebuild_onnx_text

        def transform(graph: Path, new: Path) -> dict[str, Any]:
            if spec.method == "quantize_int8":
                return shrink.onnx_quantize_int8(graph, new)
            return shrink.onnx_prune(graph, spec.sparsity, new)

        out = work_dir / f"model.{'int8' if spec.method == 'quantize_int8' else 'pruned'}.onnx.tar"
        return out, "onnx-text", rebuild_onnx_text(source, out, work_dir, transform)
    raise AssertionError(f"validated at submit: {framework} {spec.method}")


@dataclass(frozen=True)
class Candidate:
    """A version to measure: the runtime that serves it, and its artifact's size."""

    runtime: Runtime
    size_bytes: int


@dataclass(frozen=True)
class _Side:
    measured: Measured
    latency: dict[str, dict[str, float]]


def _measure(
    candidate: Candidate,
    frame: Frame,
    columns: tuple[str | None, list[str] | None],
    task: str | None,
    budget_s: float,
) -> _Side:
    runtime = candidate.runtime
    name, data = inputs_for(runtime.signature, frame, *columns)
    return _Side(
        measure(runtime, name, data, task),
        {f"batch_{b}": latency(runtime, name, data, b, budget_s) for b in (1, 32)},
    )


def _quality(before: Measured, after: Measured, frame: Frame, target: str | None) -> dict[str, Any]:
    quality: dict[str, Any] = comparison(before, after)
    if target is not None:
        truth = frame.target(target)
        _, metrics_before = task_metrics(before, truth)
        _, metrics_after = task_metrics(after, truth)
        metric = next(m for m in _PRIMARY if m in metrics_before)
        return quality | {
            "metric": metric,
            "before": metrics_before[metric],
            "after": metrics_after[metric],
            "drop": metrics_before[metric] - metrics_after[metric],
            "metrics_before": metrics_before,
            "metrics_after": metrics_after,
        }
    if "agreement" in quality:
        return quality | {"metric": "agreement", "drop": 1.0 - quality["agreement"]}
    if "cosine" in quality:
        return quality | {"metric": "cosine", "drop": 1.0 - quality["cosine"]}
    return quality


def build_report(
    before: Candidate,
    after: Candidate,
    frame: Frame,
    *,
    target: str | None,
    text_column: str | None,
    features: list[str] | None,
    task: str | None,
    threads: int,
    report: Reporter | None = None,
    latency_budget_s: float = 1.5,
    alternatives: Mapping[str, Candidate] | None = None,
) -> dict[str, Any]:
    """Size, latency and quality of ``before`` and ``after`` on ``frame``, each measured
    through its serving runtime; ``alternatives`` (measured, not registered) beside them."""
    columns = (text_column, features)
    sides = {}
    for step, (side, candidate) in enumerate((("before", before), ("after", after))):
        sides[side] = _measure(candidate, frame, columns, task, latency_budget_s)
        if report is not None:
            report.progress(stage="measure", fraction=0.5 + 0.2 * step, message=f"measured {side}")
    latencies: dict[str, dict[str, Any]] = {}
    for batch in ("batch_1", "batch_32"):
        b, a = sides["before"].latency[batch], sides["after"].latency[batch]
        speedup = round(b["p50_ms"] / a["p50_ms"], 3) if a["p50_ms"] else None
        latencies[batch] = {"before": b, "after": a, "speedup_p50": speedup}
    quality = _quality(sides["before"].measured, sides["after"].measured, frame, target)
    body: dict[str, Any] = {
        "size_bytes": {
            "before": before.size_bytes,
            "after": after.size_bytes,
            "ratio": round(after.size_bytes / before.size_bytes, 4),
        },
        "latency_ms": latencies,
        "quality": quality,
        "quality_drop": round(float(quality.get("drop", 0.0)), 6),
        "dataset": frame.ref,
        "threads": threads,
    }
    if alternatives:
        body["alternatives"] = {}
        for name, candidate in alternatives.items():
            measured = _measure(candidate, frame, columns, task, latency_budget_s)
            body["alternatives"][name] = {
                "size_bytes": candidate.size_bytes,
                "latency_ms": measured.latency,
                "quality": _quality(sides["before"].measured, measured.measured, frame, target),
            }
    return body


def run_optimize(payload: dict[str, Any], report: Reporter, work_dir: Path) -> dict[str, Any]:
    spec = OptimizeSpec.model_validate(payload["spec"])
    inputs = payload["inputs"]
    source = inputs["source"]
    frame = load_frame(inputs["dataset"], spec.max_rows)
    threads = int(payload["threads"])
    report.progress(
        stage="optimize", fraction=0.1, message=f"{spec.method} of {source['framework']}"
    )
    if source["framework"] == "transformers":
        from maas.jobs.kinds.hf_optimize import run_hf_optimize

        out, body = run_hf_optimize(spec, source, frame, work_dir, threads, report)
    else:
        out, body = _optimize_file(
            spec, source, frame, inputs.get("features"), work_dir, threads, report
        )
    report.log(f"{spec.method}: wrote {out.name} ({out.stat().st_size} bytes)")
    src = {"model": source["model"], "version": source["version"]}
    full = {"method": spec.method, "source": src, **body}
    report.progress(stage="done", fraction=1.0, quality_drop=full["quality_drop"])
    metadata = {
        key: source["metadata"][key]
        for key in (
            "task",
            "train_task",
            "estimator",
            "target",
            "text_column",
            "features",
            "labels",
        )
        if key in source["metadata"]
    }
    metrics = full["quality"].get("metrics_after") or {}
    return {
        "artifacts": [
            {"file": out.name, "metadata": {**metadata, "optimization": full}, "metrics": metrics}
        ],
        "report": full,
        "dataset": frame.ref,
        "source": src,
    }


def _optimize_file(
    spec: OptimizeSpec,
    source: dict[str, Any],
    frame: Frame,
    features: list[str] | None,
    work_dir: Path,
    threads: int,
    report: Reporter,
) -> tuple[Path, dict[str, Any]]:
    """scikit-learn and ONNX sources, measured through the serving runtimes."""
    signature = Signature.model_validate(source["signature"])
    _, sample = inputs_for(signature, frame, spec.text_column, features)
    path = Path(source["path"])
    out, framework, details = _apply(spec, source["framework"], path, sample, work_dir)
    before = Candidate(load(source["framework"], path, threads, work_dir), path.stat().st_size)
    after = Candidate(load(framework, out, threads, work_dir), out.stat().st_size)
    body = build_report(
        before,
        after,
        frame,
        target=spec.target,
        text_column=spec.text_column,
        features=features,
        task=source["metadata"].get("task"),
        threads=threads,
        report=report,
        latency_budget_s=spec.latency_budget_s,
    )
    return out, {**details, **body}
