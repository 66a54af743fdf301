"""Registry fixtures: one real database per test, on SQLite and on PostgreSQL.

PostgreSQL tests each get a schema of their own (selected through the URL's
``search_path`` option), created before and dropped after, so they never see each
other's rows and leave nothing behind.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine
from tests.databases import postgres_schema

from maas.protocols.signature import Signature
from maas.registry.artifacts import ArtifactStore
from maas.registry.db import create_engine_for, session_factory, upgrade_to_head
from maas.registry.service import RegistryService

#: Pushes ``content`` and records it as the next version of ``model``.
PushVersion = Callable[..., int]


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'registry.db'}"
        return
    with postgres_schema(request.getfixturevalue("postgres_url"), "unit") as url:
        yield url


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = create_engine_for(database_url)
    upgrade_to_head(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(str(tmp_path / "artifacts"))


@pytest.fixture
def registry(engine: Engine, store: ArtifactStore) -> RegistryService:
    return RegistryService(session_factory(engine), store)


@pytest.fixture
def push(registry: RegistryService, store: ArtifactStore) -> PushVersion:
    def push_version(model: str, content: bytes = b"model bytes") -> int:
        with store.writer() as writer:
            writer.write(content)
            artifact = writer.commit()
        info = registry.create_version(
            model, artifact=artifact, filename="m.skops", framework="sklearn", signature=Signature()
        )
        return info.version

    return push_version
