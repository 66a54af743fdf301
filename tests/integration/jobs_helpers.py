"""Shared pieces of the job tests: a server, the SDK and CLI against it, waiting."""

from __future__ import annotations

import time

from maas.client import Client
from maas.protocols.jobs import JobInfo
from tests.integration.server import RunningServer, cli
from tests.processes import pid_alive

__all__ = ["cli", "pid_alive", "sdk", "wait_until"]


def sdk(server: RunningServer) -> Client:
    return Client(server.url, api_key=server.api_key, timeout=60)


def wait_until(client: Client, job_id: str, check: object, timeout_s: float = 60) -> JobInfo:
    """Poll the job until ``check(job)`` holds; fail with the job's log otherwise."""
    deadline = time.monotonic() + timeout_s
    while True:
        job = client.get_job(job_id)
        if check(job):  # type: ignore[operator]
            return job
        if time.monotonic() > deadline:
            logs = client.job_logs(job_id)
            raise AssertionError(f"job {job_id} stuck in {job.state}: {job}\n{logs}")
        time.sleep(0.2)
