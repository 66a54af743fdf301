"""Usage metering: one record per inference call, written in batches off the request path.

A record counts what the call used in the units its kind of model is sold in: rows
(tensors), prompt and completion tokens (text, embeddings, rerank), seconds of audio
(speech to text) and characters (text to speech), with the compute time of each.

``UsageLedger.record`` only appends to a list, so metering costs a request no SQL, no
await and no lock. A background task writes what has gathered every
``flush_interval_s`` or as soon as ``batch_size`` records wait, as one bulk insert in
a worker thread. A plain list with an event does what an ``asyncio.Queue`` would,
without a per-item future or a ``put`` to await. ``aclose`` writes everything still
pending, so a clean stop (SIGTERM) loses nothing; records that cannot be written
(database down) are kept and retried, up to ``max_pending``. A record the database
refuses for its content is dropped alone (``maas.registry.appends``), so one bad
record never holds up the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Table, case, func, select
from sqlalchemy.orm import Session, sessionmaker

from maas.errors import InvalidRequest
from maas.registry.appends import PendingRows, append_rows, fit_row
from maas.registry.tables import UsageRecord

__all__ = ["GROUPS", "MeteredCall", "UsageLedger", "parse_group_by"]

log = logging.getLogger("maas.auth")

#: What usage can be grouped by, and the column each name stands for.
GROUPS: dict[str, Any] = {
    "key": UsageRecord.key_id,
    "model": UsageRecord.model,
    "day": UsageRecord.day,
}


@dataclass(frozen=True, slots=True)
class MeteredCall:
    """What one inference call used; ``at`` is epoch seconds (a float is cheaper to take
    on the hot path than a datetime, which the writer builds instead)."""

    key_id: str | None
    model: str
    version: int | None
    endpoint: str  # "v2.infer", "openai.chat", ...
    status: int
    latency_ms: float
    rows: int
    prompt_tokens: int
    completion_tokens: int
    compute_s: float
    at: float
    #: Speech: seconds of audio heard (transcriptions) and characters spoken (speech).
    audio_s: float = 0.0
    characters: int = 0


def parse_group_by(text: str | None) -> tuple[str, ...]:
    """``"key,model"`` → ``("key", "model")``; unknown names are the caller's fault."""
    names = tuple(n.strip() for n in (text or "key,model").split(",") if n.strip())
    unknown = [n for n in names if n not in GROUPS]
    if unknown or not names or len(set(names)) != len(names):
        raise InvalidRequest(
            f"group_by takes distinct names among {', '.join(GROUPS)}",
            details={"group_by": text},
        )
    return names


class UsageLedger:
    """The ``usage_records`` table: batched writes and aggregate reads."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        flush_interval_s: float = 0.5,
        batch_size: int = 500,
        max_pending: int = 1_000_000,
    ) -> None:
        self._sessions = sessions
        self._interval_s = flush_interval_s
        self._batch_size = batch_size
        self._pending = PendingRows(self._insert, what="usage", max_pending=max_pending)
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    def record(self, call: MeteredCall) -> None:
        """Queue one record; never blocks and never fails the request."""
        self._pending.add(call)
        if len(self._pending) >= self._batch_size:
            self._wake.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="maas-usage-writer")

    async def aclose(self) -> None:
        """Stop the writer once its current batch is written, then write what is left."""
        if self._task is not None:
            self._closing = True
            self._wake.set()
            await self._task
            self._task = None
        await self.flush()
        if self._pending:
            log.error("%d usage records could not be written at shutdown", len(self._pending))

    async def flush(self) -> None:
        """Write every record queued so far (reads call this first: read your writes)."""
        await self._pending.flush()

    async def _run(self) -> None:
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval_s)
            self._wake.clear()
            await self.flush()

    def _insert(self, batch: Sequence[MeteredCall]) -> int:
        """Write ``batch``; return how many records are done with (see ``append_rows``)."""
        table: Table = UsageRecord.__table__  # type: ignore[assignment]  # a Table, typed FromClause
        rows = []
        for call in batch:
            at = datetime.fromtimestamp(call.at, UTC)
            row = {name: getattr(call, name) for name in MeteredCall.__slots__}
            row.update(at=at, day=at.date())
            rows.append(fit_row(table, row))
        return append_rows(self._sessions, table, rows)

    def summarize(
        self,
        group_by: Sequence[str],
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        key_id: str | None = None,
    ) -> list[dict[str, Any]]:
        """Totals per group, ``since`` inclusive and ``until`` exclusive; blocking (SQL).

        ``key_id`` None means every key; naive datetimes are taken as UTC.
        """
        columns = [GROUPS[name].label(name) for name in group_by]
        filters: list[ColumnElement[bool]] = []
        if since is not None:
            filters.append(UsageRecord.at >= _utc(since))
        if until is not None:
            filters.append(UsageRecord.at < _utc(until))
        if key_id is not None:
            filters.append(UsageRecord.key_id == key_id)
        query = (
            select(
                *columns,
                func.count().label("requests"),
                func.sum(_is_error()).label("errors"),
                func.sum(UsageRecord.rows).label("rows"),
                func.sum(UsageRecord.prompt_tokens).label("prompt_tokens"),
                func.sum(UsageRecord.completion_tokens).label("completion_tokens"),
                func.sum(UsageRecord.compute_s).label("compute_s"),
                func.sum(UsageRecord.audio_s).label("audio_s"),
                func.sum(UsageRecord.characters).label("characters"),
                func.avg(UsageRecord.latency_ms).label("mean_latency_ms"),
            )
            .where(*filters)
            .group_by(*columns)
            .order_by(*columns)
        )
        with self._sessions() as session:
            return [_plain(row._asdict()) for row in session.execute(query)]

    def last_used(self) -> dict[str, datetime]:
        """When each key last made a metered call; blocking (SQL)."""
        query = (
            select(UsageRecord.key_id, func.max(UsageRecord.at))
            .where(UsageRecord.key_id.is_not(None))
            .group_by(UsageRecord.key_id)
        )
        with self._sessions() as session:
            return {str(key): _utc(at) for key, at in session.execute(query)}


def _is_error() -> Any:
    return case((UsageRecord.status >= 400, 1), else_=0)


def _utc(moment: datetime) -> datetime:
    # SQLite keeps datetimes as text without an offset: compare in UTC everywhere.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    if "day" in row and row["day"] is not None:
        row["day"] = row["day"].isoformat()
    for name in ("errors", "rows", "prompt_tokens", "completion_tokens", "characters"):
        row[name] = int(row[name] or 0)
    row["compute_s"] = float(row["compute_s"] or 0.0)
    row["audio_s"] = round(float(row["audio_s"] or 0.0), 3)
    row["mean_latency_ms"] = round(float(row["mean_latency_ms"] or 0.0), 3)
    return row
