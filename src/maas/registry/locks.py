"""``exclusive``: one holder at a time among every server of a database, without a
home-made cluster protocol.

On PostgreSQL it is a session advisory lock, held on a connection of its own: the
servers sharing the database are the ones that must take turns, and the lock goes
with the connection if its process dies. SQLite is one machine's file, so an
``flock`` on a file beside the data serves the same purpose (dropped by the kernel
when its process dies, kill -9 included). Neither waits: a second caller learns at
once that someone else holds it.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, text

__all__ = ["exclusive", "one_at_a_time"]


def _advisory_key(name: str) -> int:
    """A stable signed 64-bit key for ``name`` (advisory locks are numbered)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


@contextmanager
def exclusive(engine: Engine, name: str, lock_file: Path) -> Iterator[bool]:
    """Hold the lock ``name`` for the block; yields ``False`` (and holds nothing) when
    another process holds it. ``lock_file`` is used where the database is not
    PostgreSQL."""
    if engine.dialect.name == "postgresql":
        key = _advisory_key(name)
        with engine.connect() as connection:
            held = bool(connection.scalar(text("SELECT pg_try_advisory_lock(:key)"), {"key": key}))
            connection.commit()
            try:
                yield held
            finally:
                if held:
                    connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                    connection.commit()
        return
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


@contextmanager
def one_at_a_time(engine: Engine, name: str, lock_file: Path | None) -> Iterator[None]:
    """Hold the lock ``name`` for the block, waiting for whoever holds it: for work every
    server must see done before it goes on (the schema's migrations), not skip. Without
    a ``lock_file`` (an in-memory SQLite database, which no other process can open)
    nothing is taken."""
    if engine.dialect.name == "postgresql":
        key = _advisory_key(name)
        with engine.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
            connection.commit()
            try:
                yield
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                connection.commit()
        return
    if lock_file is None:
        yield
        return
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor drops the lock
