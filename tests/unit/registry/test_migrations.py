"""Migrations create exactly what ``tables.py`` declares, on both backends."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, inspect

from maas.registry.db import upgrade_to_head
from maas.registry.tables import Base


def test_migrations_match_the_tables(engine: Engine) -> None:
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_upgrade_is_idempotent(engine: Engine) -> None:
    upgrade_to_head(engine)  # the fixture already upgraded once: a restart does it again
    assert set(Base.metadata.tables) <= set(inspect(engine).get_table_names())
