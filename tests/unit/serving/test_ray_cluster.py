"""Model replicas on a Ray cluster: a real (simulated) cluster of a head and two worker
nodes on loopback, the real ModelManager and Deployment, a real iris model.

One cluster serves the module (starting one takes seconds); each test deploys its own
version and removes its actors when its manager closes. The version is the iris
classifier as ONNX: every replica is a new process, and onnxruntime imports in a tenth
of the CPU scikit-learn and skops take (about 0.2 against 2 CPU-s), some 25 replicas a
run.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import ray
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from tests.ray_cluster import NODE, Cluster, loopback_cluster
from tests.unit.runtimes import trained
from tests.waiting import until

from maas.config import ClusterSettings, ServingSettings
from maas.errors import ArtifactCorrupted, ModelNotReady, PlacementInfeasible, WorkerCrashed
from maas.observability.metrics import exposition
from maas.protocols.management import DeploymentSpec, VersionInfo
from maas.registry.artifacts import ArtifactStore
from maas.registry.service import RegistryService
from maas.serving.manager import ModelManager

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(240)]

ORPHAN_TIMEOUT_S = 4.0


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """A head and two worker nodes of 2 CPUs each, all on 127.0.0.1, no dashboard."""
    with loopback_cluster(workers=2) as cluster:
        ray.init(address=cluster.address, namespace="maas", log_to_driver=False)
        try:
            yield cluster
        finally:
            ray.shutdown()


@pytest.fixture(scope="module")
def iris_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained.write_onnx(
        trained.iris_classifier(), tmp_path_factory.mktemp("onnx") / "iris.onnx"
    )


@pytest.fixture
def publish(
    publish: Callable[..., VersionInfo], iris_onnx: Path, tmp_path: Path
) -> Callable[..., VersionInfo]:
    """The serving fixture's ``publish``, of the ONNX iris unless told another file: a
    copy of the test's own, since replicas are named by their artifact's digest and a
    test's replicas outlive it by the orphan timeout."""
    import onnx

    model = onnx.load(str(iris_onnx))
    model.doc_string = f"iris for {tmp_path.name}"
    own = tmp_path / "iris.onnx"
    onnx.save(model, str(own))
    return partial(publish, source=own)


@pytest.fixture
async def on_cluster(cluster: Cluster, registry: RegistryService, store: ArtifactStore) -> Any:
    """Managers over the test's registry whose models run on the cluster (or, with
    ``local=True``, in this process); all closed afterwards."""
    built: list[ModelManager] = []

    def build(*, local: bool = False, **overrides: Any) -> ModelManager:
        settings = ClusterSettings(
            ray_address=cluster.address,
            health_interval_s=0.3,
            ready_timeout_s=90,
            # Replicas outlive the manager that closes (others may share them): a test's
            # are gone a few seconds after it, not a minute.
            orphan_timeout_s=ORPHAN_TIMEOUT_S,
            **overrides,
        )
        manager = ModelManager(
            registry,
            store,
            ServingSettings(worker_mode="threads", runtime_threads=1),  # as tests/conftest.py
            cluster=None if local else settings,
        )
        built.append(manager)
        return manager

    yield build
    for manager in built:
        await manager.close()


def _deploy(
    registry: RegistryService, publish: Callable[..., VersionInfo], **spec: Any
) -> VersionInfo:
    version = publish("iris")
    deployment = DeploymentSpec(max_batch_size=8, **spec)
    return registry.update_deployment(version.model, version.version, deployment)


def _rows(version: VersionInfo, count: int = 5) -> dict[str, np.ndarray]:
    features, _ = trained.iris()
    return {version.signature.inputs[0].name: features[:count].astype(np.float32)}


class _Load:
    """Callers sending the same small request in a loop until stopped, counting."""

    def __init__(self, manager: ModelManager, version: VersionInfo, callers: int = 4) -> None:
        self._manager = manager
        self._version = version
        self._stop = asyncio.Event()
        self.ok = 0
        self.failed: list[BaseException] = []
        self._tasks = [asyncio.create_task(self._caller()) for _ in range(callers)]

    async def _caller(self) -> None:
        inputs = _rows(self._version, 3)
        while not self._stop.is_set():
            try:
                await self._manager.predict(
                    self._version.model, self._version.version, inputs, timeout_s=30
                )
            except Exception as exc:
                self.failed.append(exc)
            else:
                self.ok += 1
            await asyncio.sleep(0.01)

    async def calls_after(self, count: int) -> None:
        """Until ``count`` more calls have succeeded."""
        target = self.ok + count
        await until(lambda: self.ok >= target or bool(self.failed), timeout_s=90)

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)


async def _both_live(deployment: Any) -> None:
    """Until both replicas answer, by their sockets: a test that kills one must find the
    other live. (On a loaded machine a replica's process has been seen to end just after
    its load, as Ray's log says "Worker unexpectedly exits"; Ray restarts it and the
    gateway connects again, which is what this waits for.)"""

    def live() -> bool:
        replicas = deployment.status()["replicas"]
        return len(replicas) == 2 and all(
            r["alive"] and r["calls_by"] == "socket" for r in replicas
        )

    await until(live, timeout_s=90)


async def test_replicas_spread_over_nodes_and_answer_as_in_process(
    on_cluster: Any, registry: RegistryService, publish: Callable[..., VersionInfo]
) -> None:
    version = _deploy(registry, publish, instances=2)
    remote, local = on_cluster(), on_cluster(local=True)
    deployment = await remote.deployment(version)
    status = deployment.status()
    assert status["workers"] == "ray" and status["ready"]
    assert len(status["pids"]) == 2 and os.getpid() not in status["pids"]
    assert len(set(status["nodes"])) == 2, status["nodes"]  # one lost node never takes both
    inputs = _rows(version, 20)
    _, on_ray = await remote.predict(version.model, version.version, inputs)
    _, in_process = await local.predict(version.model, version.version, inputs)
    assert set(on_ray) == set(in_process)
    for name in in_process:
        np.testing.assert_array_equal(on_ray[name], in_process[name])
    expected = trained.iris_classifier().predict(inputs[version.signature.inputs[0].name])
    assert (on_ray["label"] == expected).all()
    # The calls take the replicas' sockets (one refused at the load, as a replica Ray
    # restarted just after its ping, is tried again at a later health round); through
    # Ray (for a gateway that cannot reach a socket) a replica answers the same.
    await _both_live(deployment)
    digest = version.digest.removeprefix("sha256:")[:12]
    names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)]
    replica = ray.get_actor(next(n for n in names if digest in n), namespace="maas")
    answer, through_ray = await replica.predict.remote(inputs, list(in_process))
    assert answer == "ok"
    for name in in_process:
        np.testing.assert_array_equal(through_ray[name], in_process[name])


async def test_more_cpus_than_any_node_has_is_refused_at_once(
    on_cluster: Any, registry: RegistryService, publish: Callable[..., VersionInfo]
) -> None:
    version = _deploy(registry, publish, cpus=3)  # each node has 2
    manager = on_cluster()
    started = time.monotonic()
    with pytest.raises(PlacementInfeasible) as caught:
        await manager.deployment(version)
    assert time.monotonic() - started < 30
    assert caught.value.code == "placement_infeasible" and caught.value.status == 503
    assert "3 CPU" in caught.value.message and "largest has 2 CPUs" in caught.value.message
    assert caught.value.details["room"] == 0
    # Two replicas of 2 CPUs fit (one node each), but seven do not: the count matters too.
    crowded = _deploy(registry, publish, cpus=2, instances=7)
    with pytest.raises(PlacementInfeasible, match="7 replicas"):
        await manager.deployment(crowded)


async def test_memory_is_asked_of_the_nodes(
    on_cluster: Any, registry: RegistryService, publish: Callable[..., VersionInfo]
) -> None:
    manager = on_cluster()
    small = _deploy(registry, publish, memory_bytes=64 * 1024 * 1024)
    deployment = await manager.deployment(small)
    assert deployment.is_ready and len(deployment.status()["pids"]) == 1
    huge = _deploy(registry, publish, memory_bytes=10**15)  # a petabyte: no node has it
    with pytest.raises(PlacementInfeasible, match="memory"):
        await manager.deployment(huge)


async def test_without_memory_bytes_a_replica_asks_an_estimate_from_its_artifact(
    on_cluster: Any, registry: RegistryService, publish: Callable[..., VersionInfo]
) -> None:
    unsized = _deploy(registry, publish)  # no memory_bytes
    roomy = on_cluster(replica_base_memory_bytes=64 * 1024 * 1024)
    assert (await roomy.deployment(unsized)).is_ready
    # The same version where a bare replica would take a petabyte: no node has room,
    # and the refusal names the memory it asked, the estimate over the artifact's size.
    crowded = on_cluster(replica_base_memory_bytes=10**15)
    with pytest.raises(PlacementInfeasible) as caught:
        await crowded.deployment(unsized)
    asked = caught.value.details["per_replica"]["memory"]
    assert asked == 10**15 + 2 * unsized.size_bytes


async def test_a_load_failing_on_the_nodes_says_why_and_leaves_no_actor(
    on_cluster: Any,
    registry: RegistryService,
    store: ArtifactStore,
    publish: Callable[..., VersionInfo],
) -> None:
    version = _deploy(registry, publish, instances=2)
    blob = store.local_path(version.digest, verify=False)
    blob.chmod(0o644)
    blob.write_bytes(b"not the bytes that were pushed")  # each replica checks the digest
    manager = on_cluster()
    with pytest.raises(ArtifactCorrupted, match="corrupted"):
        await manager.deployment(version)
    assert manager.find(version.model, version.version).status()["error"] == "artifact_corrupted"
    # The replicas were removed, not left restarting: the cluster's CPUs are all free.
    await until(
        lambda: ray.available_resources().get("CPU") == ray.cluster_resources()["CPU"], timeout_s=90
    )


async def test_a_killed_replica_fails_no_call_and_comes_back(
    on_cluster: Any, registry: RegistryService, publish: Callable[..., VersionInfo]
) -> None:
    version = _deploy(registry, publish, instances=2)
    manager = on_cluster()
    deployment = await manager.deployment(version)
    await _both_live(deployment)
    before = deployment.status()["pids"]
    load = _Load(manager, version)
    try:
        await load.calls_after(20)
        os.kill(before[0], signal.SIGKILL)
        await load.calls_after(50)
        await until(
            lambda: len(pids := deployment.status()["pids"]) == 2 and before[0] not in pids,
            timeout_s=90,
        )
        await load.calls_after(20)
    finally:
        await load.stop()
    assert not load.failed, load.failed[:3]
    assert deployment.is_ready and before[1] in deployment.status()["pids"]


async def test_a_replica_ray_will_not_restart_is_replaced(
    on_cluster: Any, registry: RegistryService, publish: Callable[..., VersionInfo]
) -> None:
    version = _deploy(registry, publish, instances=2)
    manager = on_cluster(max_restarts=0)
    deployment = await manager.deployment(version)
    before = deployment.status()["pids"]
    os.kill(before[0], signal.SIGKILL)
    await until(
        lambda: len(pids := deployment.status()["pids"]) == 2 and before[0] not in pids,
        timeout_s=90,
    )
    _, outputs = await manager.predict(version.model, version.version, _rows(version))
    assert len(outputs["label"]) == 5


async def test_a_lost_node_fails_no_call_and_its_replica_moves(
    cluster: Cluster,
    on_cluster: Any,
    registry: RegistryService,
    publish: Callable[..., VersionInfo],
) -> None:
    # The replicas of earlier tests hold CPUs until they find themselves orphaned; with
    # the nodes that busy, this test's two replicas could share one, which it removes.
    await until(lambda: not _actors("ALIVE"), timeout_s=30)
    version = _deploy(registry, publish, instances=2)
    manager = on_cluster()
    deployment = await manager.deployment(version)
    await _both_live(deployment)
    nodes = deployment.status()["nodes"]
    assert len(set(nodes)) == 2, nodes
    driver = ray.get_runtime_context().get_node_id()
    victim = next(n for n in cluster.worker_nodes if n.node_id in nodes and n.node_id != driver)
    load = _Load(manager, version)
    try:
        await load.calls_after(20)
        await asyncio.to_thread(cluster.remove_node, victim)
        await load.calls_after(50)
        await until(
            lambda: len(now := deployment.status()["nodes"]) == 2 and victim.node_id not in now,
            timeout_s=90,
        )
        await load.calls_after(20)
    finally:
        await load.stop()
        cluster.add_node(**NODE)  # the module's cluster has its three nodes again
    assert not load.failed, load.failed[:3]
    assert deployment.is_ready


async def test_readiness_follows_the_replicas_that_answer(
    on_cluster: Any, registry: RegistryService, publish: Callable[..., VersionInfo]
) -> None:
    version = _deploy(registry, publish, instances=2)
    manager = on_cluster()
    deployment = await manager.deployment(version)
    pids = deployment.status()["pids"]
    for pid in pids:  # alive to Ray, silent to the gateway: no ping is answered
        os.kill(pid, signal.SIGSTOP)
    try:
        await until(lambda: not deployment.is_ready, timeout_s=30)
        assert deployment.status()["pids"] == []
        with pytest.raises(WorkerCrashed):
            await manager.predict(version.model, version.version, _rows(version))
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    # Ready as soon as one replica answers again; wait for both pings, then check that
    # they are the same processes, not restarted ones.
    await until(lambda: len(deployment.status()["pids"]) == len(pids), timeout_s=30)
    assert deployment.is_ready
    assert sorted(deployment.status()["pids"]) == sorted(pids)
    _, outputs = await manager.predict(version.model, version.version, _rows(version))
    assert len(outputs["label"]) == 5


async def test_replicas_go_to_the_nodes_offering_model_slots(
    cluster: Cluster,
    on_cluster: Any,
    registry: RegistryService,
    publish: Callable[..., VersionInfo],
) -> None:
    slotted = cluster.add_node(**NODE, resources={"model_slot": 1})
    try:
        await until(lambda: ray.cluster_resources().get("model_slot") == 1, timeout_s=90)
        manager = on_cluster()
        one = _deploy(registry, publish, instances=1)
        deployment = await manager.deployment(one)
        assert deployment.status()["nodes"] == [slotted.node_id]
        # One slot in the whole cluster: a second replica has no room, whatever the CPUs.
        two = _deploy(registry, publish, instances=2)
        with pytest.raises(PlacementInfeasible, match="model_slot"):
            await manager.deployment(two)
        await manager.close()
    finally:
        cluster.remove_node(slotted)


@ray.remote(resources={"model_slot": 1}, num_cpus=0)
class _SlotHolder:
    """Holds a model slot, as another model's replica would."""

    def ready(self) -> bool:
        return True


def _actors(state: str | None = None) -> dict[str, int]:
    """The cluster's actors that are not dead (or those in ``state``) by id, with their
    pids: from the GCS, which pings none of them."""
    from ray._private.state import actors

    return {
        a["ActorID"]: a["Pid"]
        for a in actors().values()
        if a["State"] != "DEAD" and state in (None, a["State"])
    }


async def test_a_replica_loaded_while_another_waits_for_room_is_kept_alive(
    cluster: Cluster,
    on_cluster: Any,
    registry: RegistryService,
    publish: Callable[..., VersionInfo],
) -> None:
    """A replica counts the servers' silence from the end of its own load, and the
    health rounds start only once every replica has loaded: one that loaded while the
    other waited longer than the orphan timeout for room removed itself."""
    slotted = [cluster.add_node(**NODE, resources={"model_slot": 1}) for _ in range(2)]
    holder = None
    try:
        await until(lambda: ray.cluster_resources().get("model_slot") == 2, timeout_s=90)
        holder = _SlotHolder.remote()  # type: ignore[attr-defined]
        await asyncio.to_thread(ray.get, holder.ready.remote())
        before = _actors().keys()  # earlier tests' actors, restarting ones among them
        version = _deploy(registry, publish, instances=2)
        starting = asyncio.create_task(on_cluster().deployment(version))
        # The replica that found room is alive once its load (its constructor) is over.
        await until(lambda: len(_actors("ALIVE").keys() - before) == 1, timeout_s=90)
        [first] = [pid for actor, pid in _actors("ALIVE").items() if actor not in before]
        await asyncio.sleep(2 * ORPHAN_TIMEOUT_S)  # the other still waits: the case itself
        assert not starting.done()
        ray.kill(holder)  # room for the second replica
        deployment = await starting
        pids = deployment.status()["pids"]
        assert len(pids) == 2 and first in pids
        await asyncio.sleep(2 * ORPHAN_TIMEOUT_S)  # the health rounds keep both alive
        assert deployment.status()["pids"] == pids and deployment.is_ready
    finally:
        if holder is not None:
            ray.kill(holder)
        for node in slotted:
            cluster.remove_node(node)


async def test_cluster_status_and_metrics_say_where_each_replica_runs(
    cluster: Cluster,
    on_cluster: Any,
    registry: RegistryService,
    publish: Callable[..., VersionInfo],
) -> None:
    version = _deploy(registry, publish, instances=2)
    manager = on_cluster()
    await manager.deployment(version)
    labels = {"model": version.model, "version": str(version.version)}
    before = _replica_calls(labels)  # the load's warm-up calls
    for _ in range(3):
        await manager.predict(version.model, version.version, _rows(version))
    status = await manager.cluster_status()
    assert status["backend"] == "ray" and status["address"] == cluster.address
    # Earlier tests of the module removed nodes: Ray lists them too, dead.
    nodes = {node["node_id"]: node for node in status["nodes"] if node["alive"]}
    assert len(nodes) == 3, status["nodes"]
    assert [node["is_head"] for node in nodes.values()].count(True) == 1
    assert all(node["resources"]["CPU"] == 2 for node in nodes.values())
    [served] = [d for d in status["deployments"] if d["version"] == version.version]
    replicas = served["replicas"]
    assert [r["replica"] for r in replicas] == [0, 1] and all(r["alive"] for r in replicas)
    assert {r["node"] for r in replicas} <= set(nodes) and len({r["node"] for r in replicas}) == 2
    # Each replica takes one of its node's CPUs, which the node no longer has free (Ray
    # leaves a resource out of the free ones once none is left).
    for node_id in {r["node"] for r in replicas}:
        assert nodes[node_id]["available"].get("CPU", 0.0) <= 1
    up = {
        (sample.labels["replica"], sample.labels["node"]): sample.value
        for sample in _samples("maas_replica_up", labels)
    }
    for replica in replicas:
        assert up[(str(replica["replica"]), replica["node"])] == 1, up
    assert _replica_calls(labels) == before + 3  # one per call, whichever replica took it


def _samples(name: str, labels: dict[str, str]) -> list[Sample]:
    """The samples of one metric whose labels include ``labels``, read from /metrics."""
    return [
        sample
        for family in text_string_to_metric_families(exposition()[0].decode())
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    ]


def _replica_calls(labels: dict[str, str]) -> float:
    """Successful calls to the replicas of one version, summed over the replicas."""
    samples = _samples("maas_replica_calls_total", {**labels, "outcome": "ok"})
    return sum(sample.value for sample in samples)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_two_gateways_share_replicas_which_outlive_them_until_orphaned(
    on_cluster: Any, registry: RegistryService, publish: Callable[..., VersionInfo]
) -> None:
    """Two managers (two gateways) loading one version use the same replicas; one
    closing leaves them to the other; once neither pings them they remove themselves,
    for good although Ray restarts replicas that die (``max_restarts`` -1)."""
    version = _deploy(registry, publish, instances=2)
    first, second = on_cluster(), on_cluster()
    one = await first.deployment(version)
    two = await second.deployment(version)
    pids = sorted(one.status()["pids"])
    assert len(pids) == 2 and sorted(two.status()["pids"]) == pids
    await first.close()  # its shutdown: the replicas stay for the other
    assert all(_alive(pid) for pid in pids)
    _, outputs = await second.predict(version.model, version.version, _rows(version))
    assert len(outputs["label"]) == 5 and sorted(two.status()["pids"]) == pids
    # Another gateway, later, attaches to them rather than making its own.
    third = on_cluster()
    assert sorted((await third.deployment(version)).status()["pids"]) == pids
    await asyncio.gather(second.close(), third.close())
    # Nobody pings them now: each replica removes itself after the orphan timeout.
    await until(lambda: not any(_alive(pid) for pid in pids), timeout_s=60)
    names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)]
    assert not [n for n in names if version.digest.removeprefix("sha256:")[:12] in n], names


async def test_a_gateway_stopping_mid_load_leaves_the_replicas_others_use(
    on_cluster: Any, registry: RegistryService, publish: Callable[..., VersionInfo]
) -> None:
    """A second gateway scaling a shared version out (the same replica 0, a new
    replica 1) that shuts down while replica 1 starts lets go of the replicas when its
    load ends, instead of removing them: the first gateway's replica keeps serving with
    the same pid, and the new one, pinged by nobody, removes itself."""
    version = _deploy(registry, publish, instances=1)
    first, second = on_cluster(), on_cluster()
    one = await first.deployment(version)
    pids = one.status()["pids"]
    scaled = registry.update_deployment(
        version.model, version.version, DeploymentSpec(max_batch_size=8, instances=2)
    )
    digest = version.digest.removeprefix("sha256:")[:12]

    def replicas() -> list[str]:
        named = ray.util.list_named_actors(all_namespaces=True)
        return [a["name"] for a in named if digest in a["name"]]

    loading = asyncio.create_task(second.deployment(scaled))
    while len(replicas()) < 2:  # replica 1 is created; it takes seconds to load
        assert not loading.done(), "the load ended before the gateway could stop"
        await asyncio.sleep(0.02)
    await second.close()  # the load goes on, and ends on a retired deployment
    with pytest.raises(ModelNotReady):
        await loading
    await asyncio.sleep(1.0)  # several of the first gateway's health pings (0.3 s)
    _, outputs = await first.predict(version.model, version.version, _rows(version))
    assert len(outputs["label"]) == 5
    assert one.is_ready and one.status()["pids"] == pids
    await until(lambda: len(replicas()) == 1, timeout_s=60)


async def test_retiring_a_shared_version_removes_its_replicas_and_the_other_recovers(
    on_cluster: Any, registry: RegistryService, publish: Callable[..., VersionInfo]
) -> None:
    """An unload for the registry removes the replicas; the other gateway, which still
    calls them until it learns of the change, fails no call beyond one retry and
    replaces them (a gateway that keeps serving a version gets its replicas back)."""
    version = _deploy(registry, publish, instances=2)
    first, second = on_cluster(), on_cluster()
    await first.deployment(version)
    deployment = await second.deployment(version)
    pids = deployment.status()["pids"]
    load = _Load(second, version, callers=2)
    try:
        await load.calls_after(10)
        await first.unload(version.model, version.version)
        await until(lambda: not any(_alive(pid) for pid in pids), timeout_s=90)
        await until(
            lambda: len(now := deployment.status()["pids"]) == 2 and not set(now) & set(pids),
            timeout_s=90,
        )
        await load.calls_after(20)
    finally:
        await load.stop()
    assert all(isinstance(exc, WorkerCrashed) for exc in load.failed), load.failed[:3]
    assert deployment.is_ready


async def test_a_new_replica_goes_to_the_node_that_holds_its_artifact(
    on_cluster: Any, registry: RegistryService, publish: Callable[..., VersionInfo]
) -> None:
    """Each round unloads the version and loads it with another spec (new actors, by
    name): with three nodes free, each round's replica lands where the artifact is,
    which chance alone would do once in 27 for the three rounds."""
    manager = on_cluster()
    version = _deploy(registry, publish, instances=1, cpus=1.0)
    first = (await manager.deployment(version)).status()["nodes"]
    for cpus in (0.5, 0.25, 0.75):
        await manager.unload(version.model, version.version)
        version = registry.update_deployment(
            version.model, version.version, DeploymentSpec(instances=1, cpus=cpus)
        )
        assert (await manager.deployment(version)).status()["nodes"] == first
    # A redeploy asking all of a node's CPUs while the old replica still holds one of
    # them there: the node is busy, so the new replica goes elsewhere rather than wait.
    bigger = registry.update_deployment(
        version.model, version.version, DeploymentSpec(instances=1, cpus=2)
    )
    await manager.redeploy(bigger)
    moved = manager.find(version.model, version.version)
    assert moved is not None and moved.is_ready and moved.status()["nodes"] != first


def test_models_loading_side_by_side_connect_the_server_once(cluster: Cluster) -> None:
    """A server starting with several models on the cluster connects from each load's
    thread at once; a second ray.init while the first runs fails inside Ray. In a fresh
    process, as a server is (this one is connected already)."""
    code = (
        "import asyncio, sys\n"
        "from maas.config import ClusterSettings\n"
        "from maas.serving.ray_instances import RayCluster\n"
        "cluster = RayCluster(ClusterSettings(ray_address=sys.argv[1]))\n"
        "async def main():\n"
        "    await asyncio.gather(*(cluster.connect() for _ in range(4)))\n"
        "asyncio.run(main())\n"
        "cluster.close()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, cluster.address], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
