"""What a server will load at start, read before it imports its database layer.

``maas serve`` starts a worker process ahead of need (``prestart_worker``) only when
the registry holds versions that would run in one; it must know that before SQLAlchemy
and the rest of the server are imported (the point is to overlap them). The default
registry is a SQLite file, which the standard library reads in milliseconds. Any
other database, or a file that cannot be read, says nothing: ``None``.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing

__all__ = ["aliased_frameworks"]

_SQLITE = "sqlite:///"


def aliased_frameworks(database_url: str) -> set[str] | None:
    """The frameworks of the versions some alias points to (what a server loads at
    start); empty for a database not created yet; None when this cannot tell."""
    if not database_url.startswith(_SQLITE):
        return None
    path = database_url.removeprefix(_SQLITE)
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1.0)) as db:
            rows = db.execute(
                "SELECT DISTINCT v.framework FROM model_versions v"
                " JOIN aliases a ON a.version_id = v.id"
            ).fetchall()
    except sqlite3.OperationalError as exc:
        # A database not created yet: nothing to load. Anything else: cannot tell.
        return set() if "unable to open" in str(exc) or "no such table" in str(exc) else None
    except sqlite3.Error:
        return None
    return {str(framework) for (framework,) in rows}
