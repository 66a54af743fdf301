"""Servers that run jobs, in the test's own process: the real composition root
(``open_services``) over a database and an artifact store that several of them may
share, as several ``maas serve`` on one PostgreSQL do."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from tests.jobs_data import iris_csv

from maas.config import Settings
from maas.protocols.jobs import JobInfo, TrainSpec
from maas.services import Services, open_services

__all__ = ["job_server", "push_iris", "states", "train_iris", "wait_job"]


@asynccontextmanager
async def job_server(
    home: Path, database_url: str, artifacts: Path, **sections: Any
) -> AsyncIterator[Services]:
    """The services of one server with home ``home`` on the shared database and store;
    ``sections`` are settings sections (``jobs={...}``, ``cluster={...}``)."""
    settings = Settings(
        _env_file=None,
        home=home,
        database_url=database_url,
        storage={"artifact_url": str(artifacts)},
        auth={"enabled": False},
        **sections,
    )
    async with open_services(settings) as services:
        yield services


async def push_iris(services: Services, scratch: Path) -> None:
    data = iris_csv(scratch / "iris.csv").read_bytes()

    async def chunks() -> AsyncIterator[bytes]:
        yield data

    await services.datasets.push("iris", chunks(), filename="iris.csv")


def train_iris(model: str = "iris", search_s: float | None = None) -> TrainSpec:
    """A real training job on iris; with ``search_s`` its optuna search runs that long."""
    search = None
    if search_s is not None:
        search = {
            "n_trials": 10_000,
            "timeout_s": search_s,
            "cv": 2,
            "space": {"C": {"low": 0.001, "high": 100, "log": True}},
        }
    return TrainSpec.model_validate(
        {
            "kind": "train",
            "model": model,
            "dataset": "iris",
            "task": "tabular_classification",
            "target": "species",
            "estimator": "logistic_regression",
            "params": {"max_iter": 300},
            "search": search,
            "onnx": False,
        }
    )


async def wait_job(
    services: Services, job_id: str, check: Callable[[JobInfo], bool], timeout_s: float = 120
) -> JobInfo:
    """Poll the job until ``check(job)`` holds; fail with its log otherwise."""
    deadline = time.monotonic() + timeout_s
    while True:
        job = await services.jobs.get(job_id)
        if check(job):
            return job
        if time.monotonic() > deadline:
            events = await services.jobs.events(job_id)
            raise AssertionError(f"job {job_id} stuck in {job.state}: {job}\n{events}")
        await asyncio.sleep(0.1)


async def states(services: Services, job_id: str) -> list[dict[str, Any]]:
    """The job's state events, oldest first."""
    return [event.data for event in await services.jobs.events(job_id, types=("state",))]
