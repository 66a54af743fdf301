"""Jobs on a Ray cluster: a real (simulated) cluster on loopback whose head offers no
CPUs, so a job can only run on the worker node; the real server (``open_services``
with ``cluster.ray_address``) picks the Ray backend, and a real training job on iris
runs there, is cancelled there, or is refused when no node could ever hold it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import ray
from tests.processes import pid_alive
from tests.ray_cluster import Cluster, loopback_cluster
from tests.unit.jobs.servers import job_server, push_iris, states, train_iris, wait_job
from tests.waiting import until

from maas.jobs import ray_backend
from maas.jobs.ray_backend import RayJobBackend
from maas.protocols.jobs import EvaluateSpec, OptimizeSpec
from maas.services import Services

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """A head that schedules only (0 CPUs) and one worker node of 2 CPUs."""
    with loopback_cluster(workers=1, head={"num_cpus": 0}) as cluster:
        ray.init(address=cluster.address, namespace="maas", log_to_driver=False)
        try:
            yield cluster
        finally:
            ray.shutdown()


@asynccontextmanager
async def _server(cluster: Cluster, tmp_path: Path, **jobs: Any) -> AsyncIterator[Services]:
    url = f"sqlite:///{tmp_path / 'maas.db'}"
    settings = {"ray_address": cluster.address, "ready_timeout_s": 60}
    async with job_server(
        tmp_path / "home", url, tmp_path / "artifacts", jobs=jobs, cluster=settings
    ) as services:
        assert isinstance(services.jobs._backend, RayJobBackend)  # the root's choice
        await push_iris(services, tmp_path)
        yield services


async def _logs(services: Services, job_id: str) -> list[str]:
    events = await services.jobs.events(job_id, types=("log",))
    return [str(event.data["line"]) for event in events]


async def test_a_training_job_runs_on_a_worker_node(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small chunks: the model file comes back from the node in several pieces, which the
    # registry then inspects and loads as it does every upload.
    monkeypatch.setattr(ray_backend, "_CHUNK", 1024)
    async with _server(cluster, tmp_path) as services:
        job = await services.jobs.submit(train_iris(), None)
        done = await wait_job(services, job.id, lambda j: j.finished)
        logs = await _logs(services, job.id)
        assert done.state == "succeeded", (done, logs)
        assert done.attempts == 1 and done.result["versions"] == [1]
        version = services.registry.get_version("iris", 1)
        assert version.lineage["job"] == job.id and version.metrics
        assert version.size_bytes > 2 * ray_backend._CHUNK  # it came in several chunks
        where = [line for line in logs if line.startswith("running on Ray node ")]
        assert len(where) == 1, logs
        node = where[0].removeprefix("running on Ray node ").split()[0]
        workers = {n.node_id for n in cluster.worker_nodes}
        assert cluster.head_node is not None
        assert node in workers and node != cluster.head_node.node_id, (node, workers)
        # The gateway's copy of the job's files goes with the job.
        await until(lambda: not (tmp_path / "home" / "jobs" / job.id).exists())


async def test_jobs_on_a_version_fetch_it_on_their_node(cluster: Cluster, tmp_path: Path) -> None:
    """An optimize job (ONNX conversion) and an evaluate job read version 1 from the
    store on the worker node, as a training job reads its dataset: the conversion comes
    back as version 2 with its report, the evaluation's metrics land on version 1."""
    async with _server(cluster, tmp_path) as services:
        trained = await services.jobs.submit(train_iris(), None)
        assert (await wait_job(services, trained.id, lambda j: j.finished)).state == "succeeded"
        on = {"model": "iris", "version": 1, "dataset": "iris", "target": "species"}
        specs = [
            OptimizeSpec.model_validate({**on, "method": "onnx", "latency_budget_s": 0.2}),
            EvaluateSpec.model_validate(on),
        ]
        jobs = [await services.jobs.submit(spec, None) for spec in specs]
        workers = {n.node_id for n in cluster.worker_nodes}
        for job in jobs:
            done = await wait_job(services, job.id, lambda j: j.finished, timeout_s=180)
            logs = await _logs(services, job.id)
            assert done.state == "succeeded", (done, logs)
            where = [line for line in logs if line.startswith("running on Ray node ")]
            assert len(where) == 1 and where[0].split()[4] in workers, (where, workers)
        converted = services.registry.get_version("iris", 2)
        assert converted.framework == "onnx" and converted.lineage["job"] == jobs[0].id
        evaluated = services.registry.get_version("iris", 1)
        assert evaluated.metrics["eval"]["iris"]["accuracy"] > 0.9


async def test_cancel_stops_the_job_process_on_its_node(cluster: Cluster, tmp_path: Path) -> None:
    async with _server(cluster, tmp_path, cancel_grace_s=2) as services:
        job = await services.jobs.submit(train_iris(search_s=120), None)
        running = await wait_job(services, job.id, lambda j: j.pid is not None and bool(j.progress))
        assert running.pid is not None and pid_alive(running.pid)
        cancelled = await services.jobs.cancel(job.id)  # returns once the process is gone
        assert cancelled.state == "cancelled" and cancelled.pid is None
        assert not pid_alive(running.pid)
        assert [s["state"] for s in await states(services, job.id)] == [
            "queued",
            "running",
            "cancelled",
        ]
        # Its actor is gone too: the worker's 2 CPUs are free again.
        await until(lambda: ray.available_resources().get("CPU", 0) == 2)  # type: ignore[no-untyped-call]


async def test_a_job_no_node_can_hold_fails_at_once(cluster: Cluster, tmp_path: Path) -> None:
    async with _server(cluster, tmp_path, threads_per_job=64) as services:
        job = await services.jobs.submit(train_iris(), None)
        failed = await wait_job(services, job.id, lambda j: j.finished, timeout_s=30)
        assert failed.state == "failed" and failed.error_code == "placement_infeasible"
        assert failed.error is not None
        assert "64 CPUs" in failed.error and "the largest has 2 CPUs" in failed.error
