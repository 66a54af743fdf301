"""``JobStore``: the durable side of jobs, rows of ``jobs`` and ``job_events``.

Blocking (SQLAlchemy sessions), called from threads. State changes are conditional
updates (``WHERE state = …``), so a job is claimed by one runner only and a cancel
racing the end of a job leaves exactly one outcome, also with several servers on one
database.

Ownership: ``claim`` records the claiming ``JobManager`` (``runner``, a uuid per server
start) and its host; that manager refreshes ``heartbeat_at`` of all its running jobs in
one update every few seconds. Another server settles a running job only once its
heartbeat is stale (``stale``, and the ``stale_before`` guard on ``requeue`` and
``finish``), and a runner's own writes carry ``runner=`` so that a job it lost (settled
by another server, cancelled elsewhere) is never overwritten by it.
"""

from __future__ import annotations

import threading
from collections.abc import Collection
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import ColumnElement, CursorResult, func, or_, select, true, update
from sqlalchemy.orm import Session, sessionmaker

from maas.errors import JobNotFound
from maas.protocols.jobs import JobEvent, JobInfo
from maas.registry.ids import by_id_or_prefix
from maas.registry.tables import Job
from maas.registry.tables import JobEvent as JobEventRow

__all__ = ["JobStore"]


def _now() -> datetime:
    return datetime.now(UTC)


def _rowcount(result: Any) -> int:
    return int(cast(CursorResult[Any], result).rowcount)


def _info(row: Job) -> JobInfo:
    return JobInfo(
        id=row.id,
        kind=row.kind,
        model=row.model,
        state=row.state,
        spec=row.spec,
        progress=row.progress,
        result=row.result,
        error=row.error,
        error_code=row.error_code,
        attempts=row.attempts,
        pid=row.pid,
        runner=row.runner,
        runner_host=row.runner_host,
        heartbeat_at=row.heartbeat_at,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        created_by=row.created_by,
    )


def _guard(runner: str | None, stale_before: datetime | None) -> ColumnElement[bool]:
    """The extra condition of a write: the job is still ``runner``'s, or its runner's
    heartbeat (if any) is older than ``stale_before``."""
    condition: ColumnElement[bool] = true()
    if runner is not None:
        condition = condition & (Job.runner == runner)
    if stale_before is not None:
        condition = condition & or_(Job.heartbeat_at.is_(None), Job.heartbeat_at < stale_before)
    return condition


def _event(row: JobEventRow) -> JobEvent:
    return JobEvent(seq=row.seq, at=row.at, type=row.type, data=row.data)


class JobStore:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions
        # Event numbers are max(seq) + 1: writers of one process take turns.
        self._write_lock = threading.Lock()

    def create(
        self, job_id: str, kind: str, model: str, spec: dict[str, Any], created_by: str | None
    ) -> JobInfo:
        with self._write_lock, self._sessions.begin() as session:
            row = Job(
                id=job_id,
                kind=kind,
                model=model,
                state="queued",
                spec=spec,
                progress={},
                result={},
                attempts=0,
                created_by=created_by,
            )
            session.add(row)
            session.flush()
            self._append(session, job_id, [("state", {"state": "queued"})])
            return _info(row)

    def get(self, job_id: str) -> JobInfo:
        """The job by its id or a unique start of it (listings cut ids)."""
        with self._sessions() as session:
            not_found = lambda: JobNotFound(f"job {job_id!r} not found")  # noqa: E731
            return _info(by_id_or_prefix(session, Job, job_id, not_found))

    def list_jobs(
        self, *, state: str | None = None, model: str | None = None, limit: int = 100
    ) -> list[JobInfo]:
        query = select(Job).order_by(Job.created_at.desc(), Job.id.desc()).limit(limit)
        if state is not None:
            query = query.where(Job.state == state)
        if model is not None:
            query = query.where(Job.model == model)
        with self._sessions() as session:
            return [_info(row) for row in session.scalars(query)]

    def queued(self, limit: int) -> list[JobInfo]:
        """The oldest queued jobs, the order they run in."""
        query = select(Job).where(Job.state == "queued").order_by(Job.created_at, Job.id)
        with self._sessions() as session:
            return [_info(row) for row in session.scalars(query.limit(limit))]

    def claim(
        self, job_id: str, runner: str | None = None, host: str | None = None
    ) -> JobInfo | None:
        """Move a queued job to running (one more attempt) as ``runner``'s, on ``host``;
        ``None`` if someone else did."""
        now = _now()
        with self._write_lock, self._sessions.begin() as session:
            claimed = _rowcount(
                session.execute(
                    update(Job)
                    .where(Job.id == job_id, Job.state == "queued")
                    .values(
                        state="running",
                        attempts=Job.attempts + 1,
                        started_at=now,
                        pid=None,
                        runner=runner,
                        runner_host=host,
                        heartbeat_at=now,
                    )
                )
            )
            if not claimed:
                return None
            row = session.get(Job, job_id)
            assert row is not None
            attempt = row.attempts
            self._append(session, job_id, [("state", {"state": "running", "attempt": attempt})])
            return _info(row)

    def set_pid(self, job_id: str, pid: int | None, *, runner: str | None = None) -> None:
        with self._sessions.begin() as session:
            session.execute(
                update(Job).where(Job.id == job_id, _guard(runner, None)).values(pid=pid)
            )

    def set_progress(
        self, job_id: str, progress: dict[str, Any], *, runner: str | None = None
    ) -> None:
        with self._sessions.begin() as session:
            session.execute(
                update(Job).where(Job.id == job_id, _guard(runner, None)).values(progress=progress)
            )

    def heartbeat(self, runner: str, job_ids: Collection[str]) -> set[str]:
        """Say that ``runner`` still runs its running jobs (one update for all of them);
        return which of ``job_ids`` are still its and running: the others were cancelled
        elsewhere or settled by another server, and their processes must stop."""
        if not job_ids:
            return set()
        owned = (Job.runner == runner, Job.state == "running")
        with self._sessions.begin() as session:
            session.execute(update(Job).where(*owned).values(heartbeat_at=_now()))
            ids = session.scalars(select(Job.id).where(*owned, Job.id.in_(list(job_ids))))
            return set(ids)

    def stale(self, stale_before: datetime) -> list[JobInfo]:
        """Running jobs whose runner has not said it lives since ``stale_before`` (or
        that have no runner: claimed before runners were recorded)."""
        query = select(Job).where(Job.state == "running", _guard(None, stale_before))
        with self._sessions() as session:
            return [_info(row) for row in session.scalars(query)]

    def finish(
        self,
        job_id: str,
        state: str,
        *,
        from_states: tuple[str, ...] = ("running",),
        result: dict[str, Any] | None = None,
        error: str | None = None,
        error_code: str | None = None,
        reason: str | None = None,
        runner: str | None = None,
        stale_before: datetime | None = None,
    ) -> bool:
        """End a job (succeeded, failed, cancelled) if it is in one of ``from_states``
        (and, given, still ``runner``'s or with a heartbeat older than ``stale_before``)."""
        with self._write_lock, self._sessions.begin() as session:
            values: dict[str, Any] = {
                "state": state,
                "finished_at": _now(),
                "pid": None,
                "error": error,
                "error_code": error_code,
            }
            if result is not None:
                values["result"] = result
            changed = _rowcount(
                session.execute(
                    update(Job)
                    .where(
                        Job.id == job_id,
                        Job.state.in_(from_states),
                        _guard(runner, stale_before),
                    )
                    .values(**values)
                )
            )
            if not changed:
                return False
            if state == "succeeded":  # whatever the job last said, it is complete
                done = {"stage": "done", "fraction": 1.0}
                row = session.get(Job, job_id)
                if row is not None:
                    row.progress = {**(row.progress or {}), **done}
                self._append(session, job_id, [("progress", done)])
            data: dict[str, Any] = {"state": state}
            if error_code:
                data |= {"error_code": error_code, "error": error}
            if reason:
                data["reason"] = reason
            self._append(session, job_id, [("state", data)])
            return True

    def requeue(
        self,
        job_id: str,
        reason: str,
        *,
        runner: str | None = None,
        stale_before: datetime | None = None,
    ) -> bool:
        """Put a running job back in the queue (its process is gone), saying why; the
        guards as for ``finish``."""
        with self._write_lock, self._sessions.begin() as session:
            changed = _rowcount(
                session.execute(
                    update(Job)
                    .where(Job.id == job_id, Job.state == "running", _guard(runner, stale_before))
                    .values(
                        state="queued",
                        pid=None,
                        started_at=None,
                        runner=None,
                        runner_host=None,
                        heartbeat_at=None,
                    )
                )
            )
            if changed:
                self._append(session, job_id, [("state", {"state": "queued", "reason": reason})])
            return bool(changed)

    # -- events ----------------------------------------------------------------------

    def append_events(self, job_id: str, events: list[tuple[str, dict[str, Any]]]) -> None:
        with self._write_lock, self._sessions.begin() as session:
            self._append(session, job_id, events)

    def _append(
        self, session: Session, job_id: str, events: list[tuple[str, dict[str, Any]]]
    ) -> None:
        if not events:
            return
        # Servers sharing the database append to one job at once (its runner, and the
        # server a cancel came through): a write to the job's row orders them (a row lock
        # on PostgreSQL, the database's write lock on SQLite, where SELECT … FOR UPDATE
        # means nothing), else both read the same last number and one fails on the
        # unique (job, seq).
        session.execute(update(Job).where(Job.id == job_id).values(id=Job.id))
        last = session.scalar(select(func.max(JobEventRow.seq)).where(JobEventRow.job_id == job_id))
        seq = last or 0
        now = _now()
        for kind, data in events:
            seq += 1
            session.add(JobEventRow(job_id=job_id, seq=seq, at=now, type=kind, data=data))
        session.flush()

    def events(
        self,
        job_id: str,
        *,
        after: int = 0,
        types: tuple[str, ...] | None = None,
        limit: int = 1000,
    ) -> list[JobEvent]:
        query = (
            select(JobEventRow)
            .where(JobEventRow.job_id == job_id, JobEventRow.seq > after)
            .order_by(JobEventRow.seq)
            .limit(limit)
        )
        if types is not None:
            query = query.where(JobEventRow.type.in_(types))
        with self._sessions() as session:
            return [_event(row) for row in session.scalars(query)]
