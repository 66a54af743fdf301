"""Fixtures of the unit tier: one migrated database per test, on SQLite and on
PostgreSQL (a schema of its own, created before and dropped after, so tests never see
each other's rows and leave nothing behind)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine
from tests.databases import postgres_schema

from maas.registry.db import create_engine_for, upgrade_to_head


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'maas.db'}"
        return
    with postgres_schema(request.getfixturevalue("postgres_url"), "unit") as url:
        yield url


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = create_engine_for(database_url)
    upgrade_to_head(engine)
    yield engine
    engine.dispose()
