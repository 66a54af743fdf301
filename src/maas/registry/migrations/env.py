"""Alembic environment, driven in code by ``maas.registry.db.upgrade_to_head``."""

from __future__ import annotations

from alembic import context

from maas.registry.tables import Base

config = context.config
engine = config.attributes["engine"]

with engine.begin() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    context.run_migrations()
