"""A job bound for a Ray node gets its inputs as store URL and digest, never as a
path of the gateway's disk, and the node turns them into verified local files; the
node-side runner hands out only files of its own work directory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from tests.jobs_data import iris_csv

from maas.errors import ArtifactCorrupted, InvalidInput
from maas.jobs.datasets import DatasetService
from maas.jobs.inputs import job_payload, localize
from maas.jobs.ray_backend import JobRunner
from maas.jobs.store import JobStore
from maas.protocols.jobs import JobInfo
from maas.registry.artifacts import ArtifactStore
from maas.registry.db import session_factory
from maas.registry.service import RegistryService

pytestmark = pytest.mark.anyio


async def _iris_job(engine: Engine, tmp_path: Path) -> tuple[JobInfo, DatasetService]:
    store = ArtifactStore(str(tmp_path / "artifacts"))
    datasets = DatasetService(
        session_factory(engine), ArtifactStore(store.url + "/datasets"), max_bytes=10**7
    )
    data = iris_csv(tmp_path / "iris.csv").read_bytes()

    async def chunks() -> AsyncIterator[bytes]:
        yield data

    await datasets.push("iris", chunks(), filename="iris.csv")
    spec = {
        "kind": "train",
        "dataset": "iris",
        "target": "species",
        "task": "tabular_classification",
    }
    job = JobStore(session_factory(engine)).create("a" * 32, "train", "iris", spec, None)
    return job, datasets


async def test_a_portable_payload_names_stores_and_the_node_fetches_them(
    engine: Engine, tmp_path: Path
) -> None:
    job, datasets = await _iris_job(engine, tmp_path)
    models = ArtifactStore(str(tmp_path / "artifacts"))
    registry = RegistryService(session_factory(engine), models)
    local = job_payload(job, datasets, registry, models, 1)
    portable = job_payload(job, datasets, registry, models, 1, portable=True)

    _check_on_node(portable, local, (tmp_path / "iris.csv").read_bytes(), datasets.store)


def _check_on_node(
    portable: dict[str, Any], local: dict[str, Any], original: bytes, store: ArtifactStore
) -> None:
    dataset = portable["inputs"]["dataset"]
    assert "path" not in dataset
    assert dataset["store"] == store.shared_url and dataset["digest"].startswith("sha256:")
    on_node = localize(portable)["inputs"]["dataset"]
    assert "store" not in on_node and on_node["path"] == local["inputs"]["dataset"]["path"]
    assert Path(on_node["path"]).read_bytes() == original

    Path(on_node["path"]).write_bytes(b"tampered")  # the node verifies what it fetched
    with pytest.raises(ArtifactCorrupted):
        localize(portable)


def test_the_runner_hands_out_only_its_own_files() -> None:
    runner = JobRunner("b" * 32, {}, 1)
    try:
        work_dir = Path(runner._work_dir)
        assert "b" * 32 in work_dir.name  # kill_stale_process recognises the job by it
        (work_dir / "model.skops").write_bytes(b"0123456789")
        assert (
            runner.read("model.skops", 0, 4) + runner.read("model.skops", 4, 100) == b"0123456789"
        )
        assert runner.read("model.skops", 10, 4) == b""
        for name in ("../model.skops", "/etc/passwd", "missing.bin"):
            with pytest.raises(InvalidInput):
                runner.read(name, 0, 4)
    finally:
        runner.clean()
    assert not work_dir.exists()
