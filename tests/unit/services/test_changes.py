"""``ChangeFollower`` in process: a manager that did not make a change follows it from
the feed (the registry on SQLite and PostgreSQL, a real iris model in threads), and the
server that made one applies it once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from sqlalchemy import Engine, text, update
from tests.unit.runtimes import trained
from tests.waiting import until

from maas.auth.keys import KeyHasher, KeyStore
from maas.auth.resolver import KeyResolver
from maas.config import ServingSettings
from maas.protocols.keys import KeyCreate
from maas.protocols.management import DeploymentSpec, VersionInfo
from maas.registry.artifacts import ArtifactStore
from maas.registry.changes import ChangeLog
from maas.registry.db import session_factory
from maas.registry.service import RegistryService
from maas.registry.tables import ModelVersion
from maas.runtimes.catalog import inspect_artifact
from maas.services.changes import ChangeFollower
from maas.serving.manager import ModelManager

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(str(tmp_path / "store"))


@pytest.fixture
def registry(engine: Engine, store: ArtifactStore) -> RegistryService:
    return RegistryService(session_factory(engine), store)


def _keys(engine: Engine) -> KeyStore:
    return KeyStore(session_factory(engine), KeyHasher(b"secret"))


@pytest.fixture
def publish(
    registry: RegistryService, store: ArtifactStore, tmp_path: Path
) -> Callable[[], VersionInfo]:
    source = trained.write_skops(trained.iris_classifier(), tmp_path / "iris.skops")
    info = inspect_artifact(source, source.name, trust_pickle=False)

    def push() -> VersionInfo:
        artifact = store.put_file(source)
        return registry.create_version(
            "iris",
            artifact=artifact,
            filename=source.name,
            framework=info.framework,
            signature=info.signature,
        )

    return push


@pytest.fixture
async def follower(
    engine: Engine, registry: RegistryService, store: ArtifactStore
) -> AsyncIterator[tuple[ChangeFollower, ModelManager, KeyResolver]]:
    """A second server's manager, key cache and follower (polling fast)."""
    manager = ModelManager(registry, store, ServingSettings(worker_mode="threads"))
    principals = KeyResolver(_keys(engine), ttl_s=3600)  # only the feed can make it forget
    follower = ChangeFollower(
        ChangeLog(session_factory(engine)), registry, manager, principals, poll_s=0.05
    )
    await manager.start()
    await follower.start()
    yield follower, manager, principals
    await follower.aclose()
    await manager.close()


async def test_a_moved_alias_is_followed_and_the_old_version_unloaded(
    follower: tuple[ChangeFollower, ModelManager, KeyResolver],
    registry: RegistryService,
    publish: Callable[[], VersionInfo],
) -> None:
    _, manager, _ = follower
    one, two = publish(), publish()
    registry.set_alias("iris", "production", one.version)
    await until(lambda: manager.find("iris", 1) is not None and manager.is_ready(), step_s=0.02)
    assert (await manager.resolve("iris")).version == 1  # cached now
    registry.set_alias("iris", "production", two.version)
    await until(lambda: manager.find("iris", 1) is None, step_s=0.02)
    assert (d := manager.find("iris", 2)) is not None and d.is_ready  # warmed
    assert (await manager.resolve("iris")).version == 2


async def test_a_deployment_change_redeploys_once(
    follower: tuple[ChangeFollower, ModelManager, KeyResolver],
    registry: RegistryService,
    publish: Callable[[], VersionInfo],
) -> None:
    _, manager, _ = follower
    version = publish()
    loaded = await manager.deployment(version)
    info = registry.update_deployment("iris", 1, DeploymentSpec(max_batch_size=4))
    await until(lambda: manager.find("iris", 1) is not loaded, step_s=0.02)
    redeployed = manager.find("iris", 1)
    assert redeployed is not None
    assert redeployed.version.deployment.max_batch_size == 4 and redeployed.is_ready
    await manager.redeploy(info)  # the same change again (the server that made it)
    assert manager.find("iris", 1) is redeployed


async def test_deletions_unload_and_revocations_forget_keys(
    follower: tuple[ChangeFollower, ModelManager, KeyResolver],
    registry: RegistryService,
    engine: Engine,
    publish: Callable[[], VersionInfo],
) -> None:
    _, manager, principals = follower
    one, _ = publish(), publish()
    await manager.deployment(one)
    registry.delete_version("iris", 1)
    await until(lambda: manager.find("iris", 1) is None, step_s=0.02)
    other_server = _keys(engine)  # not the resolver's store: it never sees the revocation
    created = other_server.create(KeyCreate(name="app", role="consumer"))
    assert await principals.resolve(created.key) is not None  # cached for an hour now
    other_server.revoke(created.id)
    deadline = time.monotonic() + 30
    while await principals.resolve(created.key) is not None:
        assert time.monotonic() < deadline, "the revocation never reached the cache"
        await asyncio.sleep(0.02)


async def test_after_the_feed_was_unreadable_the_server_resynchronises(
    follower: tuple[ChangeFollower, ModelManager, KeyResolver],
    engine: Engine,
    publish: Callable[[], VersionInfo],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A change the feed does not bring (its row pruned while the server could not read)
    is found all the same: the first good read after a failure checks every loaded
    version against the registry."""
    _, manager, _ = follower
    version = publish()
    loaded = await manager.deployment(version)
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE registry_changes RENAME TO registry_changes_away"))
    try:
        deadline = time.monotonic() + 30
        while "cannot read the change feed" not in caplog.text:
            assert time.monotonic() < deadline, "the follower never failed to read"
            await asyncio.sleep(0.02)
        spec = DeploymentSpec(max_batch_size=4).model_dump(mode="json")
        with engine.begin() as conn:  # a change whose row the feed no longer has
            conn.execute(update(ModelVersion).values(deployment=spec))
    finally:
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE registry_changes_away RENAME TO registry_changes"))
    await until(lambda: manager.find("iris", 1) is not loaded, step_s=0.02)
    redeployed = manager.find("iris", version.version)
    assert redeployed is not None and redeployed.version.deployment.max_batch_size == 4
