"""``optimize``: a new, smaller or faster version, with a report of what it cost.

The report measures the source and the result the same way, in process, through the
serving runtimes: artifact size, latency p50/p99 at batch 1 and 32, and quality on
the held-out dataset, as the task metric when the dataset has labels and always as
agreement and cosine similarity of the two versions' outputs. ``quality_drop`` is the
number promotion checks against the server's threshold.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from maas.jobs.kinds import shrink
from maas.jobs.kinds.data import Frame, load_frame
from maas.jobs.kinds.measure import comparison, inputs_for, latency, load, measure, task_metrics
from maas.jobs.reporter import Reporter
from maas.protocols.jobs import OptimizeSpec
from maas.protocols.signature import Signature

__all__ = ["build_report", "run_optimize"]

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
    raise AssertionError(f"validated at submit: {framework} {spec.method}")


def build_report(
    before: tuple[str, Path, Signature],
    after: tuple[str, Path],
    frame: Frame,
    *,
    target: str | None,
    text_column: str | None,
    features: list[str] | None,
    task: str | None,
    threads: int,
    report: Reporter | None = None,
    latency_budget_s: float = 1.5,
) -> dict[str, Any]:
    """Size, latency and quality of ``before`` and ``after`` on ``frame``."""
    runtimes = {
        "before": (load(before[0], before[1], threads), before[1]),
        "after": (load(after[0], after[1], threads), after[1]),
    }
    sizes = {side: path.stat().st_size for side, (_, path) in runtimes.items()}
    latencies: dict[str, dict[str, Any]] = {"batch_1": {}, "batch_32": {}}
    measured = {}
    for step, (side, (runtime, _)) in enumerate(runtimes.items()):
        name, data = inputs_for(runtime.signature, frame, text_column, features)
        measured[side] = measure(runtime, name, data, task)
        for batch in (1, 32):
            latencies[f"batch_{batch}"][side] = latency(
                runtime, name, data, batch, latency_budget_s
            )
        if report is not None:
            report.progress(stage="measure", fraction=0.5 + 0.2 * step, message=f"measured {side}")
    quality: dict[str, Any] = comparison(measured["before"], measured["after"])
    if target is not None:
        truth = frame.target(target)
        _, metrics_before = task_metrics(measured["before"], truth)
        _, metrics_after = task_metrics(measured["after"], truth)
        metric = next(m for m in _PRIMARY if m in metrics_before)
        quality |= {
            "metric": metric,
            "before": metrics_before[metric],
            "after": metrics_after[metric],
            "drop": metrics_before[metric] - metrics_after[metric],
            "metrics_before": metrics_before,
            "metrics_after": metrics_after,
        }
    elif "agreement" in quality:
        quality |= {"metric": "agreement", "drop": 1.0 - quality["agreement"]}
    elif "cosine" in quality:
        quality |= {"metric": "cosine", "drop": 1.0 - quality["cosine"]}
    for side in ("batch_1", "batch_32"):
        b, a = latencies[side]["before"]["p50_ms"], latencies[side]["after"]["p50_ms"]
        latencies[side]["speedup_p50"] = round(b / a, 3) if a else None
    return {
        "size_bytes": {
            "before": sizes["before"],
            "after": sizes["after"],
            "ratio": round(sizes["after"] / sizes["before"], 4),
        },
        "latency_ms": latencies,
        "quality": quality,
        "quality_drop": round(float(quality.get("drop", 0.0)), 6),
        "dataset": frame.ref,
        "threads": threads,
    }


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
    out, framework, details = _apply(
        spec, source["framework"], Path(source["path"]), sample, work_dir
    )
    body = build_report(
        (source["framework"], Path(source["path"]), signature),
        (framework, out),
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
