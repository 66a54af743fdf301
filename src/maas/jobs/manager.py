"""``JobManager``: the embedded worker pool that runs queued jobs.

Up to ``max_concurrent`` jobs run at once, each a separate process started by the
``JobBackend``. What a job says (logs, progress) is written to ``job_events`` in small
batches and wakes the SSE streams that follow it. A job's output files are handed to
the ``ResultSink`` (the ``Publisher``, through the composition root), so a job's model
enters the registry the same way an upload does.

Interruptions are never silent: on shutdown the running jobs are stopped and, like
jobs a crashed server left ``running``, re-queued with the reason in their log while
they have attempts left, else failed with ``job_interrupted``.

Several servers may run jobs from one database, each job exactly once: a claim is
atomic and names this manager (``runner``, a uuid per start, and its host); the manager
refreshes the heartbeat of its running jobs every ``jobs.runner_stale_s / 6`` seconds,
and settles (at start and every ``runner_stale_s / 3``) only running jobs whose
heartbeat is older than ``runner_stale_s``: their server is gone, or cannot reach the
database and will let them go (below). A job this manager no longer owns (cancelled
through another server, or settled by one after a stale heartbeat) is stopped when the
heartbeat finds it so, and every write of its outcome is guarded by ``runner``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import socket
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from maas.config import JobsSettings
from maas.errors import JobFinished, MaasError
from maas.jobs.backend import (
    JobBackend,
    JobHandle,
    JobLaunch,
    LocalProcessBackend,
    Message,
    kill_stale_process,
)
from maas.jobs.datasets import DatasetService
from maas.jobs.inputs import job_payload
from maas.jobs.logclean import LogCleaner
from maas.jobs.results import register_results
from maas.jobs.store import JobStore
from maas.jobs.validation import AnySpec, validate_spec
from maas.protocols.jobs import JobEvent, JobInfo
from maas.protocols.management import VersionInfo
from maas.registry.artifacts import ArtifactStore
from maas.registry.service import RegistryService

__all__ = ["JobManager", "ResultSink"]

log = logging.getLogger("maas.jobs")

_FLUSH_EVERY_S = 0.2
_POLL_S = 2.0
_MAX_LOG_EVENTS = 20_000


class ResultSink(Protocol):
    """How a finished job's work enters the registry (implemented by the services)."""

    async def publish(
        self,
        model: str,
        path: Path,
        *,
        metadata: dict[str, Any],
        metrics: dict[str, Any],
        lineage: dict[str, Any],
        created_by: str | None,
    ) -> VersionInfo: ...

    async def record_metrics(
        self, model: str, version: int, metrics: dict[str, Any]
    ) -> VersionInfo: ...


@dataclass
class _Run:
    job: JobInfo
    handle: JobHandle | None = None
    cancel_requested: bool = False
    pending: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    progress: dict[str, Any] = field(default_factory=dict)
    progress_dirty: bool = False
    logged: int = 0
    log_cleaner: LogCleaner = field(default_factory=LogCleaner)
    task: asyncio.Task[None] | None = None
    ended: bool = False
    #: The process has exited: what the heartbeat finds from now on is our own ending.
    exited: bool = False
    #: No longer this manager's (see ``_heartbeat``): nothing more of it is written.
    disowned: bool = False
    flushing: asyncio.Lock = field(default_factory=asyncio.Lock)


class JobManager:
    def __init__(
        self,
        store: JobStore,
        datasets: DatasetService,
        registry: RegistryService,
        artifacts: ArtifactStore,
        sink: ResultSink,
        settings: JobsSettings,
        work_root: Path,
        backend: JobBackend | None = None,
    ) -> None:
        self.store = store
        self.datasets = datasets
        self._registry = registry
        self._artifacts = artifacts
        self._sink = sink
        self._settings = settings
        self._work_root = work_root
        self._backend: JobBackend = backend or LocalProcessBackend()
        self._runs: dict[str, _Run] = {}
        self._wake = asyncio.Event()
        self._changed: dict[str, asyncio.Event] = {}
        self._dispatcher: asyncio.Task[None] | None = None
        self._keeper: asyncio.Task[None] | None = None
        self._stopping: set[asyncio.Task[None]] = set()
        self._closing = False
        #: This manager's id in ``jobs.runner``: new at every start of the server.
        self.runner = uuid.uuid4().hex
        self._host = socket.gethostname()
        #: The cutoff of the last pass that settled stale jobs (for status and tests).
        self.last_recovery: datetime | None = None

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Settle the jobs a previous server left running, then start dispatching.

        Only the server that runs jobs (``jobs.enabled``) settles them: replicas that
        share its database with ``jobs.enabled=false`` take submissions and serve
        status, and must not re-queue what it is running."""
        if not self._settings.enabled:
            return
        await asyncio.to_thread(self._recover)
        self._dispatcher = asyncio.create_task(self._dispatch(), name="maas-jobs")
        self._keeper = asyncio.create_task(self._keep(), name="maas-jobs-heartbeat")

    def _recover(self) -> None:
        """Settle the running jobs whose runner stopped saying it lives (blocking)."""
        stale_s = self._settings.runner_stale_s
        cutoff = datetime.now(UTC) - timedelta(seconds=stale_s)
        for job in self.store.stale(cutoff):
            if job.id in self._runs:  # ours: our own heartbeat is late, we are alive
                continue
            if job.runner is None:
                why = "the server stopped while the job ran"
            else:
                why = f"its server on {job.runner_host} sent no heartbeat for {stale_s:g} s"
            if job.runner_host in (None, self._host):  # its process and files are here
                if job.pid is not None and kill_stale_process(job.pid, job.id):
                    log.warning("killed the leftover process %d of job %s", job.pid, job.id)
                shutil.rmtree(self._work_root / job.id, ignore_errors=True)  # a half attempt
            self._interrupted(job, why, stale_before=cutoff)
        self.last_recovery = cutoff

    def _interrupted(
        self,
        job: JobInfo,
        why: str,
        *,
        runner: str | None = None,
        stale_before: datetime | None = None,
    ) -> None:
        """Re-queue or fail a job whose process is gone through no fault of its own;
        ``runner`` or ``stale_before`` guard the write (see ``JobStore.finish``)."""
        limit = self._settings.max_attempts
        guard: dict[str, Any] = {"runner": runner, "stale_before": stale_before}
        if self._settings.requeue_interrupted and job.attempts < limit:
            reason = f"interrupted: {why} (attempt {job.attempts} of {limit}); queued again"
            if self.store.requeue(job.id, reason, **guard):
                log.warning("job %s %s", job.id, reason)
        else:
            message = f"interrupted: {why} (attempt {job.attempts} of {limit})"
            done = self.store.finish(
                job.id, "failed", error=message, error_code="job_interrupted", **guard
            )
            if done:
                log.warning("job %s failed: %s", job.id, message)

    async def _keep(self) -> None:
        """The heartbeat of this manager's running jobs, and the periodic settling of
        other servers' stale ones."""
        stale_s = self._settings.runner_stale_s
        next_recovery = time.monotonic() + stale_s / 3
        while not self._closing:
            await asyncio.sleep(stale_s / 6)
            try:
                await self._heartbeat()
                if time.monotonic() >= next_recovery:
                    next_recovery = time.monotonic() + stale_s / 3
                    await asyncio.to_thread(self._recover)
                    self._wake.set()  # what it re-queued may start here
            except Exception:  # a database hiccup: the next beat tries again
                log.exception("the job heartbeat failed; retrying")

    async def _heartbeat(self) -> None:
        runs = dict(self._runs)
        if not runs:
            return
        owned = await asyncio.to_thread(self.store.heartbeat, self.runner, list(runs))
        for job_id, run in runs.items():
            if job_id in owned or run.exited or run.disowned:
                continue
            log.warning(
                "job %s is no longer this server's (cancelled through another server, or "
                "settled by one after a late heartbeat): stopping its process",
                job_id,
            )
            run.disowned = run.cancel_requested = True
            run.pending.clear()
            if run.handle is not None:  # off the beat: a stop may take cancel_grace_s
                stopping = asyncio.create_task(run.handle.stop(self._settings.cancel_grace_s))
                self._stopping.add(stopping)
                stopping.add_done_callback(self._stopping.discard)

    async def close(self) -> None:
        """Stop dispatching and stop running jobs; they are re-queued for the next start."""
        self._closing = True
        for task in (self._dispatcher, self._keeper):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        runs = list(self._runs.values())
        for run in runs:
            if run.handle is not None:
                await run.handle.stop(self._settings.cancel_grace_s)
        tasks = [run.task for run in runs if run.task is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    # -- the API's side ----------------------------------------------------------------

    async def submit(self, spec: AnySpec, created_by: str | None) -> JobInfo:
        await asyncio.to_thread(validate_spec, spec, self.datasets, self._registry, self._artifacts)
        job_id = uuid.uuid4().hex
        body = spec.model_dump(mode="json")
        job = await asyncio.to_thread(
            self.store.create, job_id, spec.kind, spec.model, body, created_by
        )
        self._wake.set()
        return job

    async def get(self, job_id: str) -> JobInfo:
        return await asyncio.to_thread(self.store.get, job_id)

    async def events(
        self, job_id: str, after: int = 0, types: tuple[str, ...] | None = None
    ) -> list[JobEvent]:
        return await asyncio.to_thread(self.store.events, job_id, after=after, types=types)

    async def cancel(self, job_id: str) -> JobInfo:
        """Cancel a queued job, or stop a running one and wait until its process is gone."""
        job = await self.get(job_id)
        if job.finished:
            raise JobFinished(f"job {job_id} already {job.state}")
        if job.state == "queued":
            done = await asyncio.to_thread(
                self.store.finish, job_id, "cancelled", from_states=("queued",), reason="cancelled"
            )
            if done:
                self._notify(job_id)
                return await self.get(job_id)
        run = self._runs.get(job_id)
        if run is not None:
            run.cancel_requested = True
            if run.handle is not None:
                await run.handle.stop(self._settings.cancel_grace_s)
            if run.task is not None:
                await asyncio.shield(run.task)
        else:  # claimed elsewhere or between states: record the wish
            await asyncio.to_thread(
                self.store.finish,
                job_id,
                "cancelled",
                from_states=("queued", "running"),
                reason="cancelled",
            )
        self._notify(job_id)
        return await self.get(job_id)

    async def wait_changed(self, job_id: str, within_s: float) -> None:
        """Return when the job has news, or after ``within_s`` (other servers' jobs)."""
        event = self._changed.setdefault(job_id, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), within_s)

    def _notify(self, job_id: str) -> None:
        event = self._changed.pop(job_id, None)
        if event is not None:
            event.set()

    # -- running -----------------------------------------------------------------------

    async def _dispatch(self) -> None:
        while not self._closing:
            self._wake.clear()
            try:
                await self._start_queued()
            except Exception:  # a database hiccup must not stop the pool for good
                log.exception("job dispatch failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), _POLL_S)

    async def _start_queued(self) -> None:
        free = self._settings.max_concurrent - len(self._runs)
        if free <= 0:
            return
        for job in await asyncio.to_thread(self.store.queued, free):
            claimed = await asyncio.to_thread(self.store.claim, job.id, self.runner, self._host)
            if claimed is None:
                continue
            run = _Run(claimed)
            self._runs[job.id] = run
            run.task = asyncio.create_task(self._run(run), name=f"job-{job.id}")
            self._notify(job.id)

    async def _run(self, run: _Run) -> None:
        job = run.job
        work_dir = self._work_root / job.id
        flusher = asyncio.create_task(self._flush_loop(run))
        try:
            await self._execute(run, work_dir)
        except Exception:  # a bug here must not leave the job running forever
            log.exception("job %s failed in the manager", job.id)
            await asyncio.to_thread(
                self.store.finish,
                job.id,
                "failed",
                error="internal error",
                error_code="internal_error",
                runner=self.runner,
            )
        finally:
            run.ended = True
            await flusher  # its last flush lands before anything below
            await self._flush(run)
            self._runs.pop(job.id, None)
            shutil.rmtree(work_dir, ignore_errors=True)
            self._notify(job.id)
            self._wake.set()

    async def _execute(self, run: _Run, work_dir: Path) -> None:
        job = run.job
        try:
            payload = await asyncio.to_thread(
                job_payload,
                job,
                self.datasets,
                self._registry,
                self._artifacts,
                self._settings.threads_per_job,
                portable=self._backend.portable,
            )
        except MaasError as exc:
            await self._fail(job, exc)
            return
        if run.cancel_requested or self._closing:  # asked while the inputs were resolved
            await self._settle_unstarted(run)
            return
        launch = JobLaunch(job.id, work_dir, payload, self._settings.threads_per_job)
        try:
            run.handle = await self._backend.start(launch)
        except MaasError as exc:  # e.g. placement_infeasible: the operator's to see
            await self._fail(job, exc)
            return
        await asyncio.to_thread(self.store.set_pid, job.id, run.handle.pid, runner=self.runner)
        self._notify(job.id)
        if run.cancel_requested or self._closing:
            await run.handle.stop(self._settings.cancel_grace_s)
        outcome: Message | None = None
        async for message in run.handle.messages():
            if message["type"] in ("result", "error"):
                outcome = message
            else:
                self._take(run, message)
        status = await run.handle.wait()
        run.exited = True
        await self._flush(run)
        if run.disowned:
            return
        if run.cancel_requested:
            await asyncio.to_thread(
                self.store.finish,
                job.id,
                "cancelled",
                reason="cancelled; the process was stopped",
                runner=self.runner,
            )
        elif self._closing:
            await asyncio.to_thread(
                self._interrupted, job, "the server shut down", runner=self.runner
            )
        elif outcome is not None and outcome["type"] == "result" and status == 0:
            # Publishing is not undone by a guarded write: make sure it is still ours.
            if job.id not in await asyncio.to_thread(self.store.heartbeat, self.runner, [job.id]):
                log.warning("job %s is no longer this server's; its results are dropped", job.id)
                return
            await self._succeed(job, outcome, work_dir)
        elif outcome is not None and outcome["type"] == "error":
            await asyncio.to_thread(
                self.store.finish,
                job.id,
                "failed",
                error=str(outcome.get("message", "the job failed")),
                error_code=str(outcome.get("code", "job_failed")),
                runner=self.runner,
            )
        else:
            await asyncio.to_thread(
                self.store.finish,
                job.id,
                "failed",
                error=f"the job process ended with status {status} before reporting a result",
                error_code="job_crashed",
                runner=self.runner,
            )

    async def _fail(self, job: JobInfo, exc: MaasError) -> None:
        await asyncio.to_thread(
            self.store.finish,
            job.id,
            "failed",
            error=exc.message,
            error_code=exc.code,
            runner=self.runner,
        )

    async def _settle_unstarted(self, run: _Run) -> None:
        if run.disowned:
            return
        if run.cancel_requested:
            await asyncio.to_thread(
                self.store.finish,
                run.job.id,
                "cancelled",
                reason="cancelled before it started",
                runner=self.runner,
            )
        else:
            await asyncio.to_thread(
                self._interrupted, run.job, "the server shut down", runner=self.runner
            )

    async def _succeed(self, job: JobInfo, outcome: Message, work_dir: Path) -> None:
        try:
            result = await register_results(self._sink, job, outcome, work_dir)
        except MaasError as exc:
            await self._fail(job, exc)
            return
        await asyncio.to_thread(
            self.store.finish, job.id, "succeeded", result=result, runner=self.runner
        )

    def _take(self, run: _Run, message: Message) -> None:
        kind = message.get("type")
        data = {k: v for k, v in message.items() if k != "type"}
        if kind == "progress":
            run.progress = {**run.progress, **data}
            run.progress_dirty = True
            run.pending.append(("progress", data))
        elif kind == "log":
            line = run.log_cleaner.clean(str(data.get("line", "")))
            if line is None:
                return
            run.logged += 1
            if run.logged < _MAX_LOG_EVENTS:
                run.pending.append(("log", {"line": line}))
            elif run.logged == _MAX_LOG_EVENTS:
                run.pending.append(("log", {"line": "… further log lines dropped"}))

    async def _flush_loop(self, run: _Run) -> None:
        """Write what the job said every ``_FLUSH_EVERY_S``; never cancelled mid-write,
        so events keep their order (the lock makes explicit flushes wait their turn)."""
        while not run.ended:
            await asyncio.sleep(_FLUSH_EVERY_S)
            try:
                await self._flush(run)
            except Exception:
                log.exception("writing the events of job %s failed", run.job.id)

    async def _flush(self, run: _Run) -> None:
        async with run.flushing:
            if run.disowned or (not run.pending and not run.progress_dirty):
                return
            batch, run.pending = run.pending, []
            progress, dirty = run.progress, run.progress_dirty
            run.progress_dirty = False
            await asyncio.to_thread(self._write, run.job.id, batch, progress if dirty else None)
        self._notify(run.job.id)

    def _write(
        self, job_id: str, batch: list[tuple[str, dict[str, Any]]], progress: dict[str, Any] | None
    ) -> None:
        self.store.append_events(job_id, batch)
        if progress is not None:
            self.store.set_progress(job_id, progress, runner=self.runner)
