"""Concurrent writers on the real PostgreSQL: version numbers stay distinct."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import Engine

from maas.protocols.signature import Signature
from maas.registry.artifacts import ArtifactStore, StoredArtifact
from maas.registry.service import RegistryService

THREADS = 8


@pytest.fixture(params=["postgresql"])
def database_url(request: pytest.FixtureRequest, database_url: str) -> str:
    """Only the PostgreSQL leg of the parent fixture: row locks are what is tested."""
    return database_url


def test_concurrent_create_version_numbers_are_distinct_and_consecutive(
    engine: Engine, registry: RegistryService, store: ArtifactStore
) -> None:
    artifacts = []
    for index in range(THREADS):
        with store.writer() as writer:
            writer.write(f"artifact {index}".encode())
            artifacts.append(writer.commit())

    def create(artifact: StoredArtifact) -> int:
        info = registry.create_version(
            "race",
            artifact=artifact,
            filename="m.skops",
            framework="sklearn",
            signature=Signature(),
        )
        return info.version

    assert engine.dialect.name == "postgresql"
    with ThreadPoolExecutor(THREADS) as pool:
        numbers = list(pool.map(create, artifacts))
    assert sorted(numbers) == list(range(1, THREADS + 1))
    assert [v.version for v in registry.list_versions("race")] == list(range(1, THREADS + 1))
