"""``evaluate``: score any version on any dataset; the metrics land on the version."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from maas.errors import InvalidSpec
from maas.jobs.kinds.data import load_frame
from maas.jobs.kinds.measure import inputs_for, load, measure, task_metrics
from maas.jobs.reporter import Reporter
from maas.protocols.jobs import EvaluateSpec
from maas.protocols.signature import Signature

__all__ = ["run_evaluate"]


def run_evaluate(payload: dict[str, Any], report: Reporter, work_dir: Path) -> dict[str, Any]:
    spec = EvaluateSpec.model_validate(payload["spec"])
    if spec.target is None:
        raise InvalidSpec("evaluate needs target: the column of true labels or values")
    inputs = payload["inputs"]
    source = inputs["source"]
    frame = load_frame(inputs["dataset"], spec.max_rows)
    runtime = load(source["framework"], Path(source["path"]), int(payload["threads"]), work_dir)
    signature = Signature.model_validate(source["signature"])
    name, data = inputs_for(signature, frame, spec.text_column, inputs.get("features"))
    report.progress(stage="predict", fraction=0.3, message=f"predicting {frame.rows} rows")
    measured = measure(runtime, name, data, source["metadata"].get("task"))
    task, metrics = task_metrics(measured, frame.target(spec.target))
    metrics = {**metrics, "rows": frame.rows}
    report.progress(stage="done", fraction=1.0, metrics=metrics)
    report.log(f"{task} on {frame.rows} rows: {metrics}")
    return {
        "evaluation": {
            "dataset": spec.dataset.partition("@")[0],
            "digest": frame.info["digest"],
            "task": task,
            "metrics": metrics,
        },
        "metrics": metrics,
        "dataset": frame.ref,
        "source": {"model": source["model"], "version": source["version"]},
    }
