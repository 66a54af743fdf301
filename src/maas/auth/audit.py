"""The audit log: who did what to which target, from where, and how it ended.

Records are append-only rows of ``audit_events``. ``AuditLog.record`` only appends to
a list and schedules one write task, so a management call never waits on the audit
insert; ``aclose`` writes what is left, so a clean stop loses nothing. A record the
database refuses for its content is dropped alone (``maas.registry.appends``); the
others are written, or kept for a retry while the database is down. Failed logins
are folded to one record per source address per minute: a password-guessing client
must not be able to flood the log (or the database) at request rate.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import Table, select
from sqlalchemy.orm import Session, sessionmaker

from maas.protocols.keys import AuditRecord
from maas.registry.appends import PendingRows, append_rows, fit_row
from maas.registry.tables import AuditEvent

__all__ = ["AUTH_FAILURE", "AuditEntry", "AuditLog", "Outcome"]

log = logging.getLogger("maas.audit")

Outcome = Literal["ok", "denied", "error"]
AUTH_FAILURE = "auth.failure"
_MAX_BURST_SOURCES = 10_000
_MAX_PENDING = 100_000  # kept for retry while the database is down; the oldest go first


@dataclass(frozen=True, slots=True)
class AuditEntry:
    actor_key_id: str | None
    actor_name: str
    action: str
    target: str
    source: str | None
    outcome: Outcome
    code: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    at: datetime = field(default_factory=lambda: datetime.now(UTC))


class AuditLog:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions
        self._pending = PendingRows(self._insert, what="audit", max_pending=_MAX_PENDING)
        self._writer: asyncio.Task[None] | None = None
        self._failure_minutes: dict[str | None, int] = {}

    def record(self, entry: AuditEntry) -> None:
        """Queue one record; never blocks and never fails the request."""
        self._pending.add(entry)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self.flush())

    def record_auth_failure(self, source: str | None, reason: str) -> None:
        """One record per source address and minute of failed logins."""
        minute = int(time.time() // 60)
        if self._failure_minutes.get(source) == minute:
            return
        if len(self._failure_minutes) >= _MAX_BURST_SOURCES:
            self._failure_minutes.clear()
        self._failure_minutes[source] = minute
        details = {"reason": reason}
        self.record(
            AuditEntry(
                None, "anonymous", AUTH_FAILURE, "", source, "denied", "unauthenticated", details
            )
        )

    async def flush(self) -> None:
        await self._pending.flush()

    async def aclose(self) -> None:
        if self._writer is not None:
            await self._writer
        await self.flush()
        if self._pending:
            log.error("%d audit records could not be written at shutdown", len(self._pending))

    def _insert(self, batch: list[AuditEntry]) -> int:
        """Write ``batch``; return how many entries are done with (see ``append_rows``)."""
        table: Table = AuditEvent.__table__  # type: ignore[assignment]  # a Table, typed FromClause
        rows = [
            fit_row(
                table,
                {
                    "at": e.at,
                    "actor_key_id": e.actor_key_id,
                    "actor_name": e.actor_name,
                    "action": e.action,
                    "target": e.target,
                    "source": e.source,
                    "outcome": e.outcome,
                    "code": e.code,
                    "details": e.details,
                },
            )
            for e in batch
        ]
        return append_rows(self._sessions, table, rows)

    def query(
        self,
        *,
        actor: str | None = None,
        action: str | None = None,
        since: datetime | None = None,
        limit: int = 100,
    ) -> list[AuditRecord]:
        """Newest first; ``actor`` matches a key id or a key name. Blocking (SQL)."""
        stmt = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
        if actor is not None:
            stmt = stmt.where((AuditEvent.actor_key_id == actor) | (AuditEvent.actor_name == actor))
        if action is not None:
            stmt = stmt.where(AuditEvent.action == action)
        if since is not None:
            stmt = stmt.where(AuditEvent.at >= since.astimezone(UTC))
        with self._sessions() as session:
            return [_record(row) for row in session.scalars(stmt)]


def _record(row: AuditEvent) -> AuditRecord:
    at = row.at if row.at.tzinfo else row.at.replace(tzinfo=UTC)
    return AuditRecord(
        id=row.id,
        at=at,
        actor_key_id=row.actor_key_id,
        actor_name=row.actor_name,
        action=row.action,
        target=row.target,
        source=row.source,
        outcome=row.outcome,
        code=row.code,
        details=row.details,
    )
