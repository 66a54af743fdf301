"""A language model's replicas on a Ray cluster, through the real ``TextService``: a
real (simulated) cluster on loopback, the real ModelManager, the real SmolLM2 GGUF.

Several prompts with several choices each travel as one request to one replica, whose
pieces come back on one stream: each choice must get its own pieces, in its order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import ray
from tests.llm_models import smollm2_gguf
from tests.ray_cluster import Cluster, loopback_cluster

from maas.config import ClusterSettings, GenerationSettings, ServingSettings
from maas.errors import ContextLengthExceeded
from maas.protocols.management import VersionInfo
from maas.registry.artifacts import ArtifactStore
from maas.registry.service import RegistryService
from maas.services.completions import TextService
from maas.serving.manager import ModelManager
from maas.serving.sampling import SamplingParams

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(240)]

GENERATION = GenerationSettings(max_running=4, max_waiting=4)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    smollm2_gguf()  # skip with the reason where the package is absent
    with loopback_cluster(workers=1) as cluster:
        ray.init(address=cluster.address, namespace="maas", log_to_driver=False)
        try:
            yield cluster
        finally:
            ray.shutdown()


@pytest.fixture
async def managers(cluster: Cluster, registry: RegistryService, store: ArtifactStore) -> Any:
    """A manager whose models run on the cluster and one whose run here."""
    settings = ClusterSettings(ray_address=cluster.address, health_interval_s=0.3)
    remote, local = (
        ModelManager(
            registry,
            store,
            ServingSettings(worker_mode="threads"),
            generation=GENERATION,
            cluster=on,
        )
        for on in (settings, None)
    )
    yield remote, local
    await remote.close()
    await local.close()


async def _texts(service: TextService, prompts: list[str], n: int) -> tuple[list[str], int]:
    params = SamplingParams(max_tokens=12, temperature=0.0)
    generation = await service.complete("smollm2", prompts, params, n)
    done = [await stream.collect() for stream in generation.streams]
    return [c.text for c in done], generation.prompt_tokens


async def test_each_choice_of_each_prompt_gets_its_own_pieces(
    managers: tuple[ModelManager, ModelManager], publish: Callable[..., VersionInfo]
) -> None:
    publish("smollm2", source=smollm2_gguf())
    remote, local = managers
    on_ray, here = TextService(remote, GENERATION), TextService(local, GENERATION)
    prompts = ["The capital of Germany is", "One, two, three,"]
    texts, prompt_tokens = await _texts(on_ray, prompts, n=2)
    status = (await remote.deployment(await remote.resolve("smollm2", None))).status()
    assert status["workers"] == "ray" and len(status["pids"]) == 1
    assert texts[0] == texts[1] and texts[2] == texts[3] and texts[0] != texts[2]
    assert (texts, prompt_tokens) == await _texts(here, prompts, n=2)
    with pytest.raises(ContextLengthExceeded):
        await _texts(on_ray, ["word " * 9000], n=1)
