"""Serving fixtures: a real registry (SQLite), a real store and a real iris model.

Models run in threads here (``worker_mode="threads"``) so that a spy around the real
``load_runtime`` sees every load; process workers have tests of their own.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.unit.runtimes import trained

from maas.config import ServingSettings
from maas.protocols.management import VersionInfo
from maas.registry.artifacts import ArtifactStore
from maas.registry.db import create_engine_for, session_factory, upgrade_to_head
from maas.registry.service import RegistryService
from maas.runtimes import catalog
from maas.runtimes.base import LoadOptions, Runtime
from maas.runtimes.catalog import inspect_artifact
from maas.serving.manager import ModelManager


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(str(tmp_path / "artifacts"))


@pytest.fixture
def registry(tmp_path: Path, store: ArtifactStore) -> Iterator[RegistryService]:
    engine = create_engine_for(f"sqlite:///{tmp_path / 'registry.db'}")
    upgrade_to_head(engine)
    yield RegistryService(session_factory(engine), store)
    engine.dispose()


@pytest.fixture
def iris_skops(tmp_path: Path) -> Path:
    return trained.write_skops(trained.iris_classifier(), tmp_path / "iris.skops")


@pytest.fixture
def publish(
    registry: RegistryService, store: ArtifactStore, iris_skops: Path
) -> Callable[..., VersionInfo]:
    """Push the iris file as the next version of ``model``, as the Publisher would."""

    def publish_version(
        model: str = "iris", *, framework: str | None = None, source: Path | None = None
    ) -> VersionInfo:
        source = source or iris_skops
        artifact = store.put_file(source)
        info = inspect_artifact(source, source.name, trust_pickle=False)
        return registry.create_version(
            model,
            artifact=artifact,
            filename=source.name,
            framework=framework or info.framework,
            signature=info.signature,
        )

    return publish_version


class LoadSpy:
    """Counts calls to the real ``catalog.load_runtime``, which it still calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []
        self.options: list[LoadOptions] = []
        self._real = catalog.load_runtime

    def __call__(self, framework: str, path: Path, options: LoadOptions) -> Runtime:
        self.calls.append((framework, path.stat().st_size))
        self.options.append(options)
        return self._real(framework, path, options)


@pytest.fixture
def load_spy(monkeypatch: pytest.MonkeyPatch) -> LoadSpy:
    spy = LoadSpy()
    monkeypatch.setattr(catalog, "load_runtime", spy)
    for name, module in list(sys.modules.items()):  # modules that imported the name
        if name.startswith("maas.serving") and getattr(module, "load_runtime", None) is spy._real:
            monkeypatch.setattr(module, "load_runtime", spy)
    return spy


ManagerFactory = Callable[..., ModelManager]


@pytest.fixture
async def managers(
    registry: RegistryService, store: ArtifactStore
) -> AsyncIterator[ManagerFactory]:
    """Build managers with the given serving settings; all are closed afterwards."""
    built: list[ModelManager] = []

    def build(**settings: Any) -> ModelManager:
        manager = ModelManager(registry, store, ServingSettings(worker_mode="threads", **settings))
        built.append(manager)
        return manager

    yield build
    for manager in built:
        await manager.close()
