"""``JobStore``: the durable side of jobs, rows of ``jobs`` and ``job_events``.

Blocking (SQLAlchemy sessions), called from threads. State changes are conditional
updates (``WHERE state = …``), so a job is claimed by one runner only and a cancel
racing the end of a job leaves exactly one outcome, also with several servers on one
database.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import CursorResult, func, select, update
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
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        created_by=row.created_by,
    )


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

    def claim(self, job_id: str) -> JobInfo | None:
        """Move a queued job to running (one more attempt); ``None`` if someone else did."""
        with self._write_lock, self._sessions.begin() as session:
            claimed = _rowcount(
                session.execute(
                    update(Job)
                    .where(Job.id == job_id, Job.state == "queued")
                    .values(state="running", attempts=Job.attempts + 1, started_at=_now(), pid=None)
                )
            )
            if not claimed:
                return None
            row = session.get(Job, job_id)
            assert row is not None
            attempt = row.attempts
            self._append(session, job_id, [("state", {"state": "running", "attempt": attempt})])
            return _info(row)

    def set_pid(self, job_id: str, pid: int | None) -> None:
        with self._sessions.begin() as session:
            session.execute(update(Job).where(Job.id == job_id).values(pid=pid))

    def set_progress(self, job_id: str, progress: dict[str, Any]) -> None:
        with self._sessions.begin() as session:
            session.execute(update(Job).where(Job.id == job_id).values(progress=progress))

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
    ) -> bool:
        """End a job (succeeded, failed, cancelled) if it is in one of ``from_states``."""
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
                    update(Job).where(Job.id == job_id, Job.state.in_(from_states)).values(**values)
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

    def requeue(self, job_id: str, reason: str) -> bool:
        """Put a running job back in the queue (its process is gone), saying why."""
        with self._write_lock, self._sessions.begin() as session:
            changed = _rowcount(
                session.execute(
                    update(Job)
                    .where(Job.id == job_id, Job.state == "running")
                    .values(state="queued", pid=None, started_at=None)
                )
            )
            if changed:
                self._append(session, job_id, [("state", {"state": "queued", "reason": reason})])
            return bool(changed)

    def running(self) -> list[JobInfo]:
        with self._sessions() as session:
            return [_info(r) for r in session.scalars(select(Job).where(Job.state == "running"))]

    # -- events ----------------------------------------------------------------------

    def append_events(self, job_id: str, events: list[tuple[str, dict[str, Any]]]) -> None:
        with self._write_lock, self._sessions.begin() as session:
            self._append(session, job_id, events)

    def _append(
        self, session: Session, job_id: str, events: list[tuple[str, dict[str, Any]]]
    ) -> None:
        if not events:
            return
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
