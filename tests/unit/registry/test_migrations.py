"""Migrations create exactly what ``tables.py`` declares, on both backends."""

from __future__ import annotations

import threading

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, inspect, text

from maas.registry.db import create_engine_for, upgrade_to_head
from maas.registry.tables import Base


def test_migrations_match_the_tables(engine: Engine) -> None:
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_upgrade_is_idempotent(engine: Engine) -> None:
    upgrade_to_head(engine)  # the fixture already upgraded once: a restart does it again
    assert set(Base.metadata.tables) <= set(inspect(engine).get_table_names())


def test_servers_starting_at_once_on_a_new_database_all_come_up(database_url: str) -> None:
    """Gateways started together (a deployment's replicas) migrate one fresh database at
    once: each must find the schema made, none may crash on the others' tables."""
    starting = threading.Barrier(4)
    failures: list[BaseException] = []

    def start() -> None:
        engine = create_engine_for(database_url)
        try:
            starting.wait()
            upgrade_to_head(engine)
        except BaseException as exc:
            failures.append(exc)
        finally:
            engine.dispose()

    servers = [threading.Thread(target=start) for _ in range(4)]
    for server in servers:
        server.start()
    for server in servers:
        server.join()
    assert failures == []
    engine = create_engine_for(database_url)
    try:
        assert set(Base.metadata.tables) <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_the_heads_a_current_schema_is_told_by_are_alembics(engine: Engine) -> None:
    """A restart skips alembic when ``alembic_version`` holds ``SCHEMA_HEADS``: a new
    migration must be added there too, or a restart would skip it."""
    from alembic.script import ScriptDirectory

    from maas.registry.db import SCHEMA_HEADS, alembic_config

    assert set(ScriptDirectory.from_config(alembic_config(engine)).get_heads()) == SCHEMA_HEADS
    with engine.connect() as conn:
        assert set(MigrationContext.configure(conn).get_current_heads()) == SCHEMA_HEADS


def test_a_database_behind_the_heads_is_upgraded(engine: Engine) -> None:
    """A database one revision short (as an older maas left it) is not taken for
    current: the upgrade runs and creates what the missing revision adds."""
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE registry_changes"))
        conn.execute(text("DELETE FROM alembic_version WHERE version_num = '0006_changes'"))
    upgrade_to_head(engine)
    assert "registry_changes" in inspect(engine).get_table_names()
