"""Registry fixtures over the unit tier's database (``tests/unit/conftest.py``: SQLite
and PostgreSQL, a schema of its own per test): a store, a registry, pushes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import Engine

from maas.protocols.signature import Signature
from maas.registry.artifacts import ArtifactStore
from maas.registry.db import session_factory
from maas.registry.service import RegistryService

#: Pushes ``content`` and records it as the next version of ``model``.
PushVersion = Callable[..., int]


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
