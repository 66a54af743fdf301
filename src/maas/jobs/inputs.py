"""What a job process is given: its spec and its inputs resolved to local files.

Resolved by the server when the job starts (not when it is submitted), from the
registry and the dataset store, so the job process opens no database and a Ray worker
could be handed the same payload.
"""

from __future__ import annotations

from typing import Any

from maas.jobs.datasets import DatasetService
from maas.jobs.validation import bundled_encoder_dir, feature_columns
from maas.protocols.jobs import JobInfo
from maas.registry.artifacts import ArtifactStore
from maas.registry.refs import parse_selector
from maas.registry.service import RegistryService

__all__ = ["job_payload"]


def job_payload(
    job: JobInfo,
    datasets: DatasetService,
    registry: RegistryService,
    artifacts: ArtifactStore,
    threads: int,
) -> dict[str, Any]:
    """The payload of ``job``; a vanished input raises its not-found error."""
    spec = job.spec
    dataset = datasets.get(spec["dataset"])
    inputs: dict[str, Any] = {
        "dataset": {
            **dataset.model_dump(mode="json"),
            "path": str(datasets.store.local_path(dataset.digest)),
        }
    }
    if job.kind in ("train", "optimize", "evaluate"):
        inputs["features"] = (
            None
            if spec.get("text_column")
            else feature_columns(dataset, spec.get("features"), spec.get("target"))
        )
    if job.kind in ("optimize", "evaluate"):
        selector = spec["version"]
        if isinstance(selector, str):
            selector = parse_selector(selector)
        version = registry.get_version(spec["model"], selector)
        inputs["source"] = {
            **version.model_dump(mode="json"),
            "path": str(artifacts.local_path(version.digest)),
        }
    if job.kind == "finetune":
        inputs["base_dir"] = str(bundled_encoder_dir())
    return {
        "job_id": job.id,
        "kind": job.kind,
        "spec": spec,
        "threads": threads,
        "inputs": inputs,
    }
