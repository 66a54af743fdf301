"""A language model's replicas on a Ray cluster, through the real ``TextService``: a
real (simulated) cluster on loopback, the real ModelManager, the real SmolLM2 GGUF.

Several prompts with several choices each travel as one request to one replica, whose
pieces come back on one stream: each choice must get its own pieces, in its order. A
replica lost while a request waited in its queue (no piece sent yet) passes it to
another; one lost mid-answer ends that answer.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import ray
from tests.llm_models import smollm2_gguf
from tests.ray_cluster import Cluster, loopback_cluster

from maas.config import ClusterSettings, GenerationSettings, ServingSettings
from maas.errors import ContextLengthExceeded, WorkerCrashed
from maas.protocols.management import DeploymentSpec, VersionInfo
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


def _manager(
    registry: RegistryService,
    store: ArtifactStore,
    generation: GenerationSettings,
    cluster: Cluster | None,
) -> ModelManager:
    settings = None
    if cluster is not None:
        settings = ClusterSettings(ray_address=cluster.address, health_interval_s=0.3)
    # One llama.cpp thread per replica, as in every server of the session
    # (tests/conftest.py): on shared cores its threads spin waiting for each other.
    serving = ServingSettings(worker_mode="threads", runtime_threads=1)
    return ModelManager(registry, store, serving, generation=generation, cluster=settings)


@pytest.fixture
async def managers(cluster: Cluster, registry: RegistryService, store: ArtifactStore) -> Any:
    """A manager whose models run on the cluster and one whose run here."""
    remote = _manager(registry, store, GENERATION, cluster)
    local = _manager(registry, store, GENERATION, None)
    yield remote, local
    await remote.close()
    await local.close()


GREEDY = SamplingParams(max_tokens=12, temperature=0.0)


async def _texts(service: TextService, prompts: list[str], n: int) -> tuple[list[str], int]:
    generation = await service.complete("smollm2", prompts, GREEDY, n)
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


async def test_a_request_queued_on_a_lost_replica_goes_to_another(
    cluster: Cluster,
    registry: RegistryService,
    store: ArtifactStore,
    publish: Callable[..., VersionInfo],
    caplog: pytest.LogCaptureFixture,
) -> None:
    version = publish("smollm2", source=smollm2_gguf())
    registry.update_deployment("smollm2", version.version, DeploymentSpec(instances=2))
    one_each = GenerationSettings(max_running=1, max_waiting=1)
    manager = _manager(registry, store, one_each, cluster)
    try:
        service = TextService(manager, one_each)
        endless = SamplingParams(max_tokens=4000, temperature=0.0, ignore_eos=True)
        # Equal load picks the first replica: the long answer, then the short question
        # queued behind it, go to the first; the second runs another long answer.
        first = await service.complete("smollm2", ["One, two,"], endless, 1)
        other = await service.complete("smollm2", ["Three, four,"], endless, 1)
        queued = await service.complete("smollm2", ["The capital of Germany is"], GREEDY, 1)
        pieces = aiter(first.streams[0])
        await anext(pieces)  # the first replica is generating
        deployment = await manager.deployment(version)
        pid = deployment.status()["pids"][0]
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(WorkerCrashed, match="lost"):
            async for _ in pieces:
                pass
        other.cancel()  # frees the second replica's one slot for the question
        answer = await queued.streams[0].collect()
        assert answer.finish_reason == "length" and "Berlin" in answer.text
        assert "lost before it answered; sending again" in caplog.text
    finally:
        await manager.close()
