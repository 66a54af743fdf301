"""Several servers running jobs from one database: each job runs exactly once, a
server that starts leaves the others' live jobs alone, a job whose server went silent
is re-queued by another with the reason in its log, and a cancel through one server
stops the process that another runs. Real servers (``open_services``) in this
process, real job processes, SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine
from tests.processes import pid_alive
from tests.unit.jobs.servers import job_server, push_iris, states, train_iris, wait_job
from tests.waiting import until

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(300)]

#: Short enough that the tests see a stale heartbeat settled, long enough that a
#: busy machine never delays a live server's beat (every 0.5 s) that much.
_STALE_S = 3.0


def _url(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


async def test_two_servers_run_each_job_exactly_once(engine: Engine, tmp_path: Path) -> None:
    jobs = {"max_concurrent": 2, "runner_stale_s": _STALE_S}
    url, store = _url(engine), tmp_path / "artifacts"
    async with (
        job_server(tmp_path / "a", url, store, jobs=jobs) as a,
        job_server(tmp_path / "b", url, store, jobs=jobs) as b,
    ):
        await push_iris(a, tmp_path)
        submitted = [await a.jobs.submit(train_iris(f"iris-{i}"), None) for i in range(4)]
        done = [await wait_job(a, job.id, lambda j: j.finished) for job in submitted]
        runners = {a.jobs.runner: "a", b.jobs.runner: "b"}
        for job in done:
            assert job.state == "succeeded", job
            assert job.attempts == 1 and job.runner in runners, job
            running = [s for s in await states(a, job.id) if s["state"] == "running"]
            assert len(running) == 1, running
            assert a.registry.get_version(job.model, 1).lineage["job"] == job.id
        print("ran on", sorted(runners[job.runner or ""] for job in done))


async def test_a_server_starting_leaves_a_live_job_alone_and_cancels_across(
    engine: Engine, tmp_path: Path
) -> None:
    jobs = {"runner_stale_s": _STALE_S, "cancel_grace_s": 2}
    url, store = _url(engine), tmp_path / "artifacts"
    async with job_server(tmp_path / "a", url, store, jobs=jobs) as a:
        await push_iris(a, tmp_path)
        job = await a.jobs.submit(train_iris(search_s=120), None)
        running = await wait_job(a, job.id, lambda j: j.pid is not None and bool(j.progress))
        assert running.pid is not None and running.started_at is not None
        async with job_server(tmp_path / "b", url, store, jobs=jobs) as b:
            # Until b has made a pass past the point where, without a's heartbeat, the
            # job would be stale: it must still be a's first and only attempt.
            await until(
                lambda: (b.jobs.last_recovery or running.started_at) > running.started_at,
                timeout_s=60,
            )
            still = await b.jobs.get(job.id)
            assert (still.state, still.attempts, still.runner) == ("running", 1, a.jobs.runner)
            assert pid_alive(running.pid)

            cancelled = await b.jobs.cancel(job.id)  # b does not run it: a must stop it
            assert cancelled.state == "cancelled"
            await until(lambda: not pid_alive(running.pid), timeout_s=60)
        final = await a.jobs.get(job.id)
        assert final.state == "cancelled" and final.attempts == 1
        assert [s["state"] for s in await states(a, job.id)] == ["queued", "running", "cancelled"]


async def test_a_job_whose_server_went_silent_is_requeued_by_another(
    engine: Engine, tmp_path: Path
) -> None:
    url, store = _url(engine), tmp_path / "artifacts"
    async with job_server(tmp_path / "c", url, store, jobs={"enabled": False}) as front:
        await push_iris(front, tmp_path)
        job = await front.jobs.submit(train_iris(), None)
        # A server on another host claims it, then is never heard of again.
        claimed = front.jobs.store.claim(job.id, "0" * 32, "gone-host")
        assert claimed is not None and claimed.attempts == 1
    jobs = {"runner_stale_s": _STALE_S, "max_attempts": 2}
    async with job_server(tmp_path / "b", url, store, jobs=jobs) as b:
        done = await wait_job(b, job.id, lambda j: j.finished)
        assert done.state == "succeeded" and done.attempts == 2 and done.runner == b.jobs.runner
        reasons = [s.get("reason", "") for s in await states(b, job.id)]
        assert any(
            "gone-host" in r and "no heartbeat" in r and "queued again" in r for r in reasons
        )
        assert b.registry.get_version("iris", 1).lineage["job"] == job.id
