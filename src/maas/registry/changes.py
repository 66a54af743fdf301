"""The change feed: how every server of one database learns what another changed.

Several ``maas serve`` processes may share one database (stateless gateways behind a
load balancer). Each keeps state derived from the registry: loaded deployments, cached
resolutions of aliases, cached API keys. A change made through one server is applied
there at once; the others learn of it from this table. Every change that another server
must act on writes one ``registry_changes`` row *in the transaction of the change
itself* (``record``), so a row exists exactly when the change committed. Each server
reads the rows past the last id it saw (``ChangeLog.since``, one query on the primary
key) a few times a second and applies them (``maas.services.changes``).

Ids must become visible in order, or a reader that saw id 11 before id 10 committed
would skip 10 for ever. SQLite has one writer at a time, so its ids commit in order.
On PostgreSQL a sequence hands out ids at insert time and transactions commit in any
order, so ``record`` first takes a lock on the table that only other writers of it wait
for (``SHARE ROW EXCLUSIVE``: readers never wait); it is the last lock such a transaction
takes, so it cannot deadlock, and registry changes are rare enough that serialising
their last milliseconds costs nothing.

Rows are kept ``retention_s`` and then pruned (``ChangeLog.prune``) by any server; a
server that could not read for longer than that resynchronises from the registry
instead of from the feed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from sqlalchemy import delete, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from maas.registry.tables import RegistryChange

__all__ = ["Change", "ChangeKind", "ChangeLog", "record"]

#: ``alias``: an alias of ``model`` was set or removed; ``version``: a version was
#: created (``latest`` moved); ``deployment``: how ``model:version`` is served changed;
#: ``version_deleted`` / ``model_deleted``: gone; ``key``: an API key was revoked.
ChangeKind = Literal["alias", "version", "deployment", "version_deleted", "model_deleted", "key"]


@dataclass(frozen=True, slots=True)
class Change:
    id: int
    kind: ChangeKind
    model: str | None
    version: int | None


def record(
    session: Session, kind: ChangeKind, model: str | None = None, version: int | None = None
) -> None:
    """Add a change row to ``session``'s transaction (call it last in the transaction:
    on PostgreSQL it locks the feed's table against other writers until the commit)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("LOCK TABLE registry_changes IN SHARE ROW EXCLUSIVE MODE"))
    session.add(RegistryChange(kind=kind, model=model, version=version))
    session.flush()


class ChangeLog:
    """Reading and pruning the feed. Blocking (SQL): call from a worker thread."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def latest_id(self) -> int:
        """The id of the newest change, 0 if none: where a starting server begins, as
        everything before it is already in the registry it reads at start."""
        with self._sessions() as session:
            return session.scalar(select(func.max(RegistryChange.id))) or 0

    def since(self, after_id: int, limit: int = 1000) -> list[Change]:
        """The changes past ``after_id``, oldest first."""
        query = (
            select(RegistryChange)
            .where(RegistryChange.id > after_id)
            .order_by(RegistryChange.id)
            .limit(limit)
        )
        with self._sessions() as session:
            return [
                Change(row.id, row.kind, row.model, row.version)  # type: ignore[arg-type]
                for row in session.scalars(query)
            ]

    def prune(self, retention_s: float) -> int:
        """Delete the changes older than ``retention_s``; how many went."""
        cutoff = datetime.now(UTC) - timedelta(seconds=retention_s)
        with self._sessions.begin() as session:
            result = session.execute(delete(RegistryChange).where(RegistryChange.at < cutoff))
            return int(result.rowcount or 0)  # type: ignore[attr-defined]
