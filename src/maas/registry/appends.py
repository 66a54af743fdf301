"""Batched writes to append-only tables (usage records, audit events) that one bad row
cannot stop.

A bulk insert fails as a whole when a single row is refused, and a writer that keeps
the batch to retry it would then fail on every later flush too. So rows are fitted to
their columns first (``fit_row``: no NUL, no unencodable text, strings cut to the
column's length), and when a batch still fails for its content, ``append_rows``
writes its rows one by one and drops, with a log line, only those the database
refuses. A failure of the database itself (down, locked, no permission) drops
nothing: the rows not yet written are handed back to be retried.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from sqlalchemy import String, Table, insert
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, StatementError
from sqlalchemy.orm import Session, sessionmaker

__all__ = ["PendingRows", "append_rows", "clean_text", "fit_row"]

log = logging.getLogger("maas.registry")

T = TypeVar("T")

_REPLACEMENT = "\ufffd"


def clean_text(text: str, max_chars: int | None = None) -> str:
    """``text`` as every backend stores it: NUL replaced (PostgreSQL refuses it), lone
    surrogates replaced (not encodable as UTF-8), cut to ``max_chars``."""
    if "\x00" in text:
        text = text.replace("\x00", _REPLACEMENT)
    if not text.isascii():
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text if max_chars is None else text[:max_chars]


def _clean_value(value: Any) -> Any:
    """Strings inside JSON values (keys included), cleaned all the way down."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {_clean_value(k): _clean_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean_value(item) for item in value]
    return value


@functools.cache
def _lengths(table: Table) -> dict[str, int | None]:
    return {
        column.name: column.type.length
        for column in table.columns
        if isinstance(column.type, String)
    }


def fit_row(table: Table, row: dict[str, Any]) -> dict[str, Any]:
    """``row`` with every string fitted to its column of ``table`` (see ``clean_text``)."""
    lengths = _lengths(table)
    fitted = {}
    for name, value in row.items():
        if isinstance(value, str):
            value = clean_text(value, lengths.get(name))
        elif isinstance(value, dict | list):
            value = _clean_value(value)
        fitted[name] = value
    return fitted


def _is_row_fault(exc: Exception) -> bool:
    """The database or its driver refused a value of the row, not the write itself."""
    if isinstance(exc, DataError | IntegrityError | ValueError | TypeError):
        return True
    # A value the driver could not adapt, raised before the database saw the statement.
    return isinstance(exc, StatementError) and not isinstance(exc, DBAPIError)


def _insert(sessions: sessionmaker[Session], table: Table, rows: Sequence[dict[str, Any]]) -> None:
    with sessions() as session, session.begin():
        session.execute(insert(table), list(rows))


def append_rows(
    sessions: sessionmaker[Session], table: Table, rows: Sequence[dict[str, Any]]
) -> int:
    """Insert ``rows`` (fitted by ``fit_row``); blocking.

    Returns how many rows, from the start, are dealt with: written, or dropped because
    the database refuses their content. The rest could not be written now (the
    database failed) and should be retried later; nothing before them is written twice.
    """
    try:
        _insert(sessions, table, rows)
        return len(rows)
    except Exception as exc:
        if not _is_row_fault(exc):
            log.error("%s: writing %d rows failed: %s", table.name, len(rows), exc)
            return 0
    for index, row in enumerate(rows):
        try:
            _insert(sessions, table, (row,))
        except Exception as exc:
            if not _is_row_fault(exc):
                log.error("%s: writing rows failed: %s", table.name, exc)
                return index
            log.error("%s: dropped a row the database refuses: %s", table.name, _first_line(exc))
    return len(rows)


def _first_line(exc: Exception) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]


class PendingRows(Generic[T]):
    """Records queued in memory and written in batches by ``insert`` (blocking: it runs
    in a thread and returns how many records, from the start, are dealt with, as
    ``append_rows`` does). One writer at a time, and a batch is never given up half
    way: a flush cancelled while its thread writes waits for that write before it lets
    the cancellation through, so no record is lost or written twice, and no second
    writer races the first for the database (SQLite would answer "locked").
    """

    def __init__(self, insert: Callable[[list[T]], int], *, what: str, max_pending: int) -> None:
        self._insert = insert
        self._what = what
        self._max_pending = max_pending
        self._pending: list[T] = []
        self._lock = asyncio.Lock()

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, record: T) -> None:
        self._pending.append(record)

    async def flush(self) -> None:
        """Write every record queued so far; those the database could not take now
        stay queued for the next flush (the oldest are dropped past ``max_pending``)."""
        async with self._lock:
            batch, self._pending = self._pending, []
            if not batch:
                return
            writing = asyncio.ensure_future(asyncio.to_thread(self._insert, batch))
            try:
                done = await asyncio.shield(writing)
            except asyncio.CancelledError:
                self._settle(batch, await writing)  # see the write through, then stop
                raise
            self._settle(batch, done)

    def _settle(self, batch: list[T], done: int) -> None:
        if done < len(batch):
            keep = batch[done:][-self._max_pending :]
            log.error("%s write failed, %d records kept for retry", self._what, len(keep))
            self._pending = keep + self._pending
