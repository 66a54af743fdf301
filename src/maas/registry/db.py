"""Engines and sessions for SQLite (embedded default) and PostgreSQL, and migrations."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from maas.registry.locks import one_at_a_time

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = [
    "SCHEMA_HEADS",
    "among_servers",
    "create_engine_for",
    "session_factory",
    "upgrade_to_head",
]

_MIGRATIONS = Path(__file__).parent / "migrations"
#: The last revision of each branch of ``migrations/versions``: a database whose
#: ``alembic_version`` holds exactly these is current. Kept equal to alembic's own
#: heads by ``tests/unit/registry/test_migrations.py``.
SCHEMA_HEADS = frozenset({"0002_auth", "0005_usage_audio", "0006_changes", "0006_job_runner"})


def create_engine_for(url: str) -> Engine:
    """An engine tuned per backend: SQLite in WAL mode with foreign keys; psycopg 3 for
    PostgreSQL (``postgresql://`` URLs are rewritten to use it)."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() != "sqlite":
        return create_engine(parsed, pool_pre_ping=True, pool_size=10, max_overflow=20)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(parsed, connect_args={"check_same_thread": False, "timeout": 30})
    event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def alembic_config(engine: Engine) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    config.attributes["engine"] = engine
    return config


@contextmanager
def among_servers(engine: Engine, purpose: str) -> Iterator[None]:
    """Hold, for the block, the lock ``purpose`` of this database and schema, waiting
    for any server sharing the database that holds it: for start-up work each must see
    done before it goes on, never done twice (a PostgreSQL advisory lock; an flock
    beside a SQLite file; nothing for an in-memory database, which no one shares)."""
    database = engine.url.database
    on_disk = engine.dialect.name == "sqlite" and database not in (None, "", ":memory:")
    lock_file = Path(f"{database}.{purpose}.lock").expanduser() if on_disk else None
    # Per database and schema (the URL's options): other schemas' servers do not wait.
    name = f"maas.{purpose}:{engine.url.render_as_string(hide_password=True)}"
    with one_at_a_time(engine, name, lock_file):
        yield


def upgrade_to_head(engine: Engine) -> None:
    """Create or upgrade the schema; safe at every start, and with several servers
    starting at once on one database: they take turns (two concurrent upgrades of a
    fresh PostgreSQL database both create ``alembic_version``, and one crashes), and
    each after the first finds the schema current.

    ``heads``: each package's tables may live on its own branch of revisions.

    A current schema (every restart but the first after an upgrade of maas) is told by
    one query, without alembic: importing it and reading the revision scripts cost
    the server 10 MB and a tenth of a second or more of every start.
    """
    if _is_current(engine):
        return
    from alembic import command

    with among_servers(engine, "migrations"):
        command.upgrade(alembic_config(engine), "heads")


def _is_current(engine: Engine) -> bool:
    """Whether the database is at ``SCHEMA_HEADS``; a revision past them (a newer maas
    migrated it) is alembic's to refuse, so it is not current either."""
    try:
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT version_num FROM alembic_version"))
            return set(rows.scalars()) == SCHEMA_HEADS
    except SQLAlchemyError:  # a new database: no alembic_version table yet
        return False
