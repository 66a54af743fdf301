"""What a job process is given: its spec and its inputs, as files it can open.

Resolved by the server when the job starts (not when it is submitted), from the
registry and the dataset store, so the job process opens no database. A job on this
machine gets paths of the server's disk; a job on a Ray node (``portable``) gets each
input as its store's URL and digest instead, which ``localize`` turns into paths of
the node's own disk before the job process starts there (the ``ReplicaTarget``
pattern: every node reaches the store, none receives the bytes from the server).
"""

from __future__ import annotations

from typing import Any

from maas.jobs.datasets import DatasetService
from maas.jobs.validation import bundled_encoder_dir, feature_columns
from maas.protocols.jobs import JobInfo
from maas.registry.artifacts import ArtifactStore
from maas.registry.refs import parse_selector
from maas.registry.service import RegistryService

__all__ = ["job_payload", "localize"]

#: The inputs that are files of a store: each has ``digest`` and ``path`` (or ``store``).
_STORED = ("dataset", "source")


def _where(store: ArtifactStore, digest: str, portable: bool) -> dict[str, str]:
    if portable:
        return {"store": store.shared_url}
    return {"path": str(store.local_path(digest))}


def job_payload(
    job: JobInfo,
    datasets: DatasetService,
    registry: RegistryService,
    artifacts: ArtifactStore,
    threads: int,
    *,
    portable: bool = False,
) -> dict[str, Any]:
    """The payload of ``job``; a vanished input raises its not-found error. With
    ``portable`` its files are named by store URL and digest, for ``localize``."""
    spec = job.spec
    dataset = datasets.get(spec["dataset"])
    inputs: dict[str, Any] = {
        "dataset": {
            **dataset.model_dump(mode="json"),
            **_where(datasets.store, dataset.digest, portable),
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
            **_where(artifacts, version.digest, portable),
        }
    if job.kind == "finetune":  # the node's own copy of the package, when portable
        inputs["base_dir"] = None if portable else str(bundled_encoder_dir())
    return {
        "job_id": job.id,
        "kind": job.kind,
        "spec": spec,
        "threads": threads,
        "inputs": inputs,
    }


def localize(payload: dict[str, Any]) -> dict[str, Any]:
    """A portable payload with its inputs fetched to, and named by, this machine's
    paths (blocking: a remote store's file is downloaded into its cache, and every
    file is verified against its digest)."""
    inputs = dict(payload["inputs"])
    for name in _STORED:
        entry = inputs.get(name)
        if entry is None or "store" not in entry:
            continue
        local = {key: value for key, value in entry.items() if key != "store"}
        store = ArtifactStore(entry["store"])
        local["path"] = str(store.local_path(entry["digest"], verify=True))
        inputs[name] = local
    if payload["kind"] == "finetune" and inputs.get("base_dir") is None:
        base = bundled_encoder_dir()
        inputs["base_dir"] = None if base is None else str(base)
    return {**payload, "inputs": inputs}
