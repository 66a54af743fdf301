"""``ModelManager`` over a real registry, store and iris model."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tests.unit.runtimes import trained
from tests.unit.serving.conftest import LoadSpy, ManagerFactory

from maas.config import ServingSettings
from maas.errors import ArtifactCorrupted, Overloaded, RolloutFailed, UnsupportedArtifact
from maas.protocols.management import DeploymentSpec, VersionInfo
from maas.registry.artifacts import ArtifactStore
from maas.registry.service import RegistryService
from maas.serving.deployment import Deployment
from maas.serving.manager import ModelManager

pytestmark = pytest.mark.anyio

Publish = Callable[..., VersionInfo]


def loaded_keys(manager: ModelManager) -> set[tuple[str, int]]:
    return {d.key for d in manager.loaded()}


async def test_concurrent_cold_gets_load_once(
    managers: ManagerFactory, publish: Publish, load_spy: LoadSpy
) -> None:
    publish()
    manager = managers()
    deployments = await asyncio.gather(*(manager.get("iris", 1) for _ in range(20)))
    assert len(load_spy.calls) == 1
    assert len({id(d) for d in deployments}) == 1
    assert deployments[0].is_ready


async def test_a_loaded_version_answers(managers: ManagerFactory, publish: Publish) -> None:
    publish()
    deployment = await managers().get("iris")
    features, _ = trained.iris()
    outputs = await deployment.predict({"input": features[:5]}, ["predict"])
    expected = trained.iris_classifier().predict(features[:5])
    np.testing.assert_array_equal(outputs["predict"], expected)


async def test_runtimes_get_the_operators_thread_count_or_choose_their_own(
    managers: ManagerFactory, publish: Publish, load_spy: LoadSpy
) -> None:
    publish()
    await managers(runtime_threads=1).get("iris")
    await managers().get("iris")
    assert [options.threads for options in load_spy.options] == [1, None]


async def test_the_least_recently_used_version_is_unloaded(
    managers: ManagerFactory, publish: Publish, load_spy: LoadSpy
) -> None:
    for _ in range(3):
        publish()
    manager = managers(max_loaded_models=2)
    await manager.get("iris", 1)
    await manager.get("iris", 2)
    await manager.get("iris", 1)  # 1 is now more recently used than 2
    await manager.get("iris", 3)
    assert loaded_keys(manager) == {("iris", 1), ("iris", 3)}
    await manager.get("iris", 2)  # comes back by loading again
    assert len(load_spy.calls) == 4
    assert loaded_keys(manager) == {("iris", 3), ("iris", 2)}


async def test_eviction_never_unloads_an_aliased_version(
    managers: ManagerFactory, publish: Publish, registry: RegistryService
) -> None:
    for _ in range(3):
        publish()
    registry.set_alias("iris", "production", 1)
    manager = managers(max_loaded_models=1)
    await manager.start()
    await manager.wait_loaded()
    await manager.get("iris", 2)
    assert loaded_keys(manager) == {("iris", 1), ("iris", 2)}  # over the limit, not evicted
    await manager.get("iris", 3)
    assert loaded_keys(manager) == {("iris", 1), ("iris", 3)}
    assert manager.is_ready()


async def test_start_loads_every_aliased_version_past_the_limit(
    managers: ManagerFactory, publish: Publish, registry: RegistryService
) -> None:
    publish("iris")
    publish("wine")
    registry.set_alias("iris", "production", 1)
    registry.set_alias("wine", "production", 1)
    manager = managers(max_loaded_models=1)
    await manager.start()
    await manager.wait_loaded()
    assert loaded_keys(manager) == {("iris", 1), ("wine", 1)}
    assert manager.is_ready() and manager.loading() == []


async def test_start_returns_before_the_aliased_versions_load(
    managers: ManagerFactory, publish: Publish, registry: RegistryService
) -> None:
    """A restart answers at once: loading runs in the background, readiness waits for
    it, and a call meanwhile loads what it needs itself."""
    publish("iris")
    publish("wine")
    registry.set_alias("iris", "production", 1)
    registry.set_alias("wine", "production", 1)
    manager = managers()
    await manager.start()  # returns with nothing loaded yet
    assert loaded_keys(manager) == set() and not manager.is_ready()
    assert manager.loading() == ["iris:1", "wine:1"]  # what readiness reports
    deployment = await manager.get("iris", "production")  # served before readiness
    assert deployment.is_ready
    await manager.wait_loaded()
    assert loaded_keys(manager) == {("iris", 1), ("wine", 1)} and manager.is_ready()


async def test_the_heap_is_frozen_once_after_the_start_and_after_each_later_load(
    managers: ManagerFactory,
    publish: Publish,
    registry: RegistryService,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What a load builds lives as long as the model (``maas.serving.heap``): frozen
    once after the loads at start, then after each load, not on every call."""
    import maas.serving.manager as manager_module

    freezes: list[set[tuple[str, int]]] = []
    manager = managers()
    monkeypatch.setattr(
        manager_module, "freeze_long_lived", lambda: freezes.append(loaded_keys(manager))
    )
    publish("iris")
    publish("wine")
    registry.set_alias("iris", "production", 1)
    await manager.start()
    await manager.wait_loaded()
    await asyncio.sleep(0)  # the freeze comes right after the load at start ends
    assert freezes == [{("iris", 1)}]  # one, after it, not one per version loaded then
    await manager.get("iris", "production")
    assert len(freezes) == 1  # a call on a loaded version freezes nothing
    await manager.get("wine", 1)  # a later load
    assert freezes[1:] == [{("iris", 1), ("wine", 1)}]
    await manager.get("wine", 1)
    assert len(freezes) == 2


def test_freezing_is_the_servers_decision() -> None:
    """Until ``enable`` (``maas serve``) nothing is frozen; then what is alive is, and
    again at each ``freeze_long_lived``. In a process of its own: freezing is global."""
    script = (
        "import gc\n"
        "from maas.serving import heap\n"
        "heap.freeze_long_lived()\n"
        "assert gc.get_freeze_count() == 0\n"
        "heap.enable()\n"
        "first = gc.get_freeze_count()\n"
        "assert first > 0\n"
        "kept = [[i] for i in range(1000)]\n"
        "heap.freeze_long_lived()\n"
        "assert gc.get_freeze_count() >= first + 1000, (first, gc.get_freeze_count())\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)


async def test_readiness_before_and_after_start_with_nothing_aliased(
    managers: ManagerFactory, publish: Publish
) -> None:
    publish()
    manager = managers()
    assert not manager.is_ready()
    await manager.start()
    await manager.wait_loaded()
    assert manager.is_ready()


async def test_readiness_waits_for_every_aliased_version(
    managers: ManagerFactory,
    publish: Publish,
    registry: RegistryService,
    store: ArtifactStore,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    other = trained.write_skops(trained.species_classifier(), tmp_path / "species.skops")
    good = publish("wine", source=other)
    corrupt = publish("iris")
    registry.set_alias("wine", "production", good.version)
    registry.set_alias("iris", "production", corrupt.version)
    path = store.local_path(corrupt.digest, verify=False)
    original = path.read_bytes()
    path.write_bytes(original[:-1] + bytes([original[-1] ^ 0xFF]))
    manager = managers()
    await manager.start()
    await manager.wait_loaded()
    assert not manager.is_ready()
    assert loaded_keys(manager) == {("wine", 1)}
    failed = manager.find("iris", 1)
    assert failed is not None
    assert isinstance(failed.error, ArtifactCorrupted)

    path.write_bytes(original)  # the operator restores the file
    monkeypatch.setattr(Deployment, "retry_after_s", 0.0)
    await manager.get("iris")
    assert manager.is_ready()


async def test_a_failed_load_reports_its_error_and_retries_later(
    managers: ManagerFactory, publish: Publish, load_spy: LoadSpy, monkeypatch: pytest.MonkeyPatch
) -> None:
    publish(framework="onnx")  # a .skops file recorded as ONNX: onnxruntime refuses it
    manager = managers()
    with pytest.raises(UnsupportedArtifact) as first:
        await manager.get("iris", 1)
    with pytest.raises(UnsupportedArtifact) as second:
        await manager.get("iris", 1)  # within retry_after_s: the remembered error
    assert second.value is first.value
    assert len(load_spy.calls) == 1
    deployment = manager.find("iris", 1)
    assert deployment is not None
    assert deployment.error is first.value

    monkeypatch.setattr(Deployment, "retry_after_s", 0.0)
    with pytest.raises(UnsupportedArtifact):
        await manager.get("iris", 1)
    assert len(load_spy.calls) == 2


async def test_resolve_is_cached_until_invalidated(
    managers: ManagerFactory, publish: Publish, registry: RegistryService
) -> None:
    publish()
    publish()
    registry.set_alias("iris", "production", 1)
    manager = managers()
    manager.resolve_ttl_s = 3600.0  # only invalidation may refresh it in this test
    assert (await manager.resolve("iris")).version == 1
    registry.set_alias("iris", "production", 2)
    assert (await manager.resolve("iris")).version == 1
    manager.invalidate("wine")  # another model's change keeps this cache
    assert (await manager.resolve("iris")).version == 1
    manager.invalidate("iris")
    assert (await manager.resolve("iris")).version == 2
    assert (await manager.resolve("iris", 1)).version == 1


async def test_a_resolution_in_use_is_renewed_in_the_background_before_it_expires(
    managers: ManagerFactory, publish: Publish, registry: RegistryService
) -> None:
    """Past half its time a resolution is still given at once while one background
    lookup renews it; an alias moved where no feed told this server shows up then."""
    publish()
    publish()
    registry.set_alias("iris", "production", 1)
    manager = managers()
    manager.resolve_ttl_s = 2.0
    assert (await manager.resolve("iris")).version == 1
    registry.set_alias("iris", "production", 2)  # not invalidated: as from elsewhere
    await asyncio.sleep(1.05)  # past half the resolution's time: the time is the subject
    answers = await asyncio.gather(*(manager.resolve("iris") for _ in range(16)))
    assert [a.version for a in answers] == [1] * 16  # at once, still within its time
    assert len(manager._renewing) == 1  # one lookup for all sixteen
    await asyncio.gather(*manager._renewing.values())
    assert (await manager.resolve("iris")).version == 2


async def test_requests_waiting_for_a_cold_load_are_bounded_by_the_queue_size(
    managers: ManagerFactory, publish: Publish, registry: RegistryService
) -> None:
    publish()
    registry.update_deployment("iris", 1, DeploymentSpec(max_queue_size=2))
    manager = managers()
    manager.resolve_ttl_s = 3600.0
    await manager.resolve("iris", 1)  # cached: each call below reaches the load at once
    features, _ = trained.iris()
    calls = [manager.predict("iris", 1, {"input": features[:1]}) for _ in range(5)]
    tasks = [asyncio.ensure_future(call) for call in calls]
    await asyncio.sleep(0)  # each task ran to its first wait; the load (threads) cannot be done
    deployment = manager.find("iris", 1)
    assert deployment is not None and not deployment.is_ready
    refused = [t for t in tasks if t.done()]
    assert len(refused) == 3  # refused at once, without waiting for the load
    for task in refused:
        error = task.exception()
        assert isinstance(error, Overloaded) and error.retry_after is not None
    served = await asyncio.gather(*(t for t in tasks if t not in refused))
    assert [version.version for version, _ in served] == [1, 1]


@pytest.mark.parametrize("load_at_start", [True, False])
async def test_prepare_loads_the_target_even_on_a_lazy_server(
    managers: ManagerFactory,
    publish: Publish,
    registry: RegistryService,
    store: ArtifactStore,
    load_at_start: bool,
    tmp_path: Path,
) -> None:
    publish()
    good = publish()
    other = trained.write_skops(trained.species_classifier(), tmp_path / "species.skops")
    broken = publish(source=other)  # its own artifact: corrupting it spares the others
    registry.set_alias("iris", "production", 1)
    path = store.local_path(broken.digest, verify=False)
    path.write_bytes(b"corrupted after upload")
    manager = managers(load_at_start=load_at_start)
    await manager.start()
    await manager.wait_loaded()
    with pytest.raises(RolloutFailed) as refused:
        await manager.prepare(broken)
    assert refused.value.details["cause"] == "artifact_corrupted"
    await manager.prepare(good)
    prepared = manager.find("iris", good.version)
    assert prepared is not None and prepared.is_ready  # loaded and warmed before any switch


async def test_unpacking_a_model_directory_honours_the_operators_limits(
    tmp_path: Path, registry: RegistryService, store: ArtifactStore
) -> None:
    """A packed model directory is unpacked at load time under the limits the server
    was started with, as at push time: not the defaults."""
    import tarfile

    from tests.unit.runtimes.text_models import embedder

    from maas.config import ServingSettings
    from maas.errors import PayloadTooLarge
    from maas.registry.archives import ExtractLimits
    from maas.runtimes.catalog import inspect_artifact

    directory = embedder(tmp_path / "embedder")
    packed = tmp_path / "embedder.tar"
    with tarfile.open(packed, "w") as tar:
        tar.add(directory, arcname="embedder")
    info = inspect_artifact(directory, packed.name, trust_pickle=False)
    version = registry.create_version(
        "words",
        artifact=store.put_file(packed),
        filename=packed.name,
        framework=info.framework,
        signature=info.signature,
    )
    settings = ServingSettings(worker_mode="threads")
    for members, loads in [(2, False), (100, True)]:
        manager = ModelManager(
            registry,
            store,
            settings,
            cache_dir=tmp_path / f"cache-{members}",
            extract_limits=ExtractLimits(max_bytes=1 << 30, max_members=members),
        )
        try:
            if loads:
                assert (await manager.get("words", version.version)).is_ready
            else:
                with pytest.raises(PayloadTooLarge):
                    await manager.get("words", version.version)
        finally:
            await manager.close()


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"worker_mode": "auto"}, "shared"),  # a small scikit-learn model
        ({"worker_mode": "auto", "shared_max_bytes": 10}, "processes"),  # iris is larger
        ({"worker_mode": "auto", "shared_workers": 0}, "processes"),  # no pool
        ({"worker_mode": "shared", "shared_workers": 0}, "processes"),  # asked, none there
        ({"worker_mode": "inline"}, "inline"),
    ],
)
async def test_where_a_scikit_learn_version_runs(
    registry: RegistryService,
    store: ArtifactStore,
    publish: Publish,
    settings: dict[str, Any],
    expected: str,
) -> None:
    publish()
    manager = ModelManager(registry, store, ServingSettings(**settings))
    try:
        deployment = await manager.get("iris")
        assert deployment.status()["workers"] == expected
        features, _ = trained.iris()
        assert (await deployment.predict({"input": features[:2]}, ["predict"]))[
            "predict"
        ].shape == (2,)
    finally:
        await manager.close()
