"""From a job's reported result to registry versions: lineage, metrics and reports.

The job process only writes files into its work directory and says what they are;
this is where they become versions (through the ``ResultSink``), each with the lineage
the issue asks for: the dataset digest, the spec, the job id and the parent version.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from maas.errors import InvalidInput, MaasError
from maas.protocols.jobs import JobInfo

if TYPE_CHECKING:
    from maas.jobs.manager import ResultSink

__all__ = ["artifact_path", "register_results"]


def _lineage(
    job: JobInfo, outcome: dict[str, Any], parent: dict[str, Any] | None
) -> dict[str, Any]:
    dataset = outcome.get("dataset") or {}
    return {
        "job": job.id,
        "kind": job.kind,
        "spec": job.spec,
        "dataset": {"name": dataset.get("name"), "digest": dataset.get("digest")},
        "parent": parent,
    }


def artifact_path(work_dir: Path, name: str) -> Path:
    """The file ``name`` of a job's work directory; a name outside it is refused (the
    job process says which files it wrote, the server must not take its word)."""
    path = (work_dir / name).resolve()
    if path.parent != work_dir.resolve() or not path.is_file():
        raise InvalidInput(f"the job reported an artifact outside its directory: {name!r}")
    return path


async def register_results(
    sink: ResultSink, job: JobInfo, outcome: dict[str, Any], work_dir: Path
) -> dict[str, Any]:
    """Register every artifact of ``outcome`` in order; return the job's result record."""
    model = job.model
    source = outcome.get("source")  # {"model", "version"} for optimize and evaluate
    parent: dict[str, Any] | None = source
    if parent is None and job.spec.get("parent") is not None:
        parent = {"model": model, "version": job.spec["parent"]}
    versions: list[int] = []
    notes: list[str] = list(outcome.get("notes") or [])
    for artifact in outcome.get("artifacts", []):
        path = artifact_path(work_dir, str(artifact["file"]))
        this_parent = parent
        if artifact.get("derived") and versions:  # e.g. the ONNX twin of a trained model
            this_parent = {"model": model, "version": versions[-1]}
        try:
            info = await sink.publish(
                model,
                path,
                metadata=dict(artifact.get("metadata") or {}),
                metrics=dict(artifact.get("metrics") or {}),
                lineage=_lineage(job, outcome, this_parent),
                created_by=job.created_by,
            )
        except MaasError as exc:
            if not artifact.get("optional"):
                raise
            notes.append(f"{path.name} was not registered: {exc.message}")
            continue
        versions.append(info.version)
    evaluation = outcome.get("evaluation")
    if evaluation and source is not None:
        await sink.record_metrics(
            model, int(source["version"]), {"eval": {evaluation["dataset"]: evaluation["metrics"]}}
        )
    result: dict[str, Any] = {"versions": versions}
    for key in ("metrics", "report", "evaluation", "source"):
        if outcome.get(key) is not None:
            result[key] = outcome[key]
    if notes:
        result["notes"] = notes
    return result
