"""A Ray address where nothing listens fails the load at once with a clear error:
``ray.init`` alone would retry it for minutes while callers wait."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import pytest

from maas.config import ClusterSettings, ServingSettings
from maas.errors import PlacementInfeasible
from maas.protocols.management import VersionInfo
from maas.registry.artifacts import ArtifactStore
from maas.registry.service import RegistryService
from maas.serving.manager import ModelManager

pytestmark = pytest.mark.anyio


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def test_an_unreachable_cluster_fails_the_load_at_once(
    registry: RegistryService, store: ArtifactStore, publish: Callable[..., VersionInfo]
) -> None:
    address = f"127.0.0.1:{_closed_port()}"
    manager = ModelManager(
        registry, store, ServingSettings(), cluster=ClusterSettings(ray_address=address)
    )
    version = publish("iris")
    started = time.monotonic()
    try:
        with pytest.raises(PlacementInfeasible, match=f"cannot reach the Ray cluster at {address}"):
            await manager.deployment(version)
    finally:
        await manager.close()
    assert time.monotonic() - started < 15
