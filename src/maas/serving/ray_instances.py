"""Model instances as Ray actors, for when one machine is not enough.

The server stays the gateway: HTTP, keys, limits, the registry and the dynamic batcher
all run in it, and only the model calls leave it, as method calls on Ray actors (one
per instance of a deployment) that Ray places on the cluster's nodes by the resources
they ask. Ray Serve's own HTTP proxy was measured at a tenth of one uvicorn process's
throughput and lost a request when a replica died; plain actors behind our gateway kept
most of it, so this is the whole of what maas takes from Ray.

An actor loads its model itself, from the artifact store as its node reaches it (the
store's directory shared by every node, or an fsspec URL each node opens with its own
credentials): the server never ships the bytes. Arrays travel as Ray arguments and
results (numpy through its object store, without copies for large ones).

Failures: an actor that dies is restarted by Ray (``max_restarts``), on another node if
its node is gone; a call it held is retried once on another live replica (V2 inference
is idempotent), so one lost replica fails no call while another lives. A replica is
live while it answers the health ping (``health_interval_s``), which runs in a
concurrency group of its own so that a busy replica still answers it. A deployment that
asks more than the cluster has fails its load with ``PlacementInfeasible`` at once,
not after an actor has waited forever for a node that will never come.

``ray`` is imported only here, and only once a cluster address is set: the core server
needs no Ray.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from maas.config import ClusterSettings
from maas.errors import MissingExtra, PlacementInfeasible, WorkerCrashed
from maas.observability.metrics import (
    REPLICA_CALL_SECONDS,
    REPLICA_CALLS,
    REPLICA_IN_FLIGHT,
    REPLICA_UP,
    WORKER_RESTARTS,
)
from maas.registry.archives import ExtractLimits
from maas.registry.artifacts import ArtifactStore
from maas.runtimes.base import LoadOptions
from maas.serving.local_artifacts import local_artifact
from maas.serving.process_workers import (
    PIPELINE_DEPTH,
    LoadTarget,
    WorkerModels,
    error_payload,
    rebuild_error,
)

__all__ = [
    "SLOT_RESOURCE",
    "ClusterNode",
    "RayCluster",
    "RayInstances",
    "Replica",
    "ReplicaTarget",
    "room",
]

log = logging.getLogger("maas.serving")

#: A custom resource an operator gives the nodes meant for models
#: (``ray start --resources '{"model_slot": 4}'``); asked one per replica if any node has it.
SLOT_RESOURCE = "model_slot"
_KEY = "model"
_HEALTH = "health"
#: Longest a health ping may take before its replica counts as lost.
_PING_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class ReplicaTarget:
    """What a replica loads, sent to its actor: the store as every node reaches it and
    the artifact's digest, never a path of the server's own disk."""

    framework: str
    store_url: str
    digest: str
    options: LoadOptions
    extract_limits: ExtractLimits


@dataclass(frozen=True)
class ClusterNode:
    """One node of the cluster as ``maas cluster status`` shows it."""

    node_id: str
    address: str
    alive: bool
    is_head: bool
    #: What the node offers (``CPU``, ``memory`` in bytes, custom resources).
    resources: dict[str, float]
    #: What is not taken by actors and tasks now (empty for a dead node).
    available: dict[str, float]


class ReplicaBody:
    """What every replica's actor answers, whatever it serves: ``ready``, the health
    ping. A failed load is kept in ``_error`` and reported by ``ready`` rather than
    raised: an actor whose constructor raises would be restarted by Ray forever."""

    _error: tuple[str, str, dict[str, Any]] | None = None

    def ready(self) -> tuple[int, str, tuple[str, str, dict[str, Any]] | None]:
        """This process's pid, its node's id and the load's error, if it failed."""
        import ray

        return os.getpid(), ray.get_runtime_context().get_node_id(), self._error


def replica_artifact(target: ReplicaTarget) -> Path:
    """The artifact on this node's disk, fetched from the store as this node reaches it."""
    store = ArtifactStore(target.store_url)
    return local_artifact(store, target.digest, target.options.cache_dir, target.extract_limits)


class Replica(ReplicaBody):
    """The body of one actor: loads at creation (again after each restart), then
    answers calls one at a time, as a worker process does."""

    def __init__(self, target: ReplicaTarget) -> None:
        self._models = WorkerModels()
        try:
            path = replica_artifact(target)
            self._models.load(_KEY, LoadTarget(target.framework, path, target.options))
        except Exception as exc:  # reported by ready(), raised in the server
            self._error = error_payload(exc)

    def predict(self, inputs: dict[str, np.ndarray], outputs: list[str]) -> tuple[str, Any]:
        try:
            return "ok", self._models.runtimes[_KEY].run_checked(inputs, outputs)
        except Exception as exc:  # the caller's error, not the actor's death
            return "error", error_payload(exc)


class RayCluster:
    """The server's connection to a Ray cluster, made on the first model or job placed
    there; one per server, shared by the models and the jobs (``maas.jobs.ray_backend``)."""

    def __init__(self, settings: ClusterSettings) -> None:
        self.settings = settings
        self._connected = False
        #: The Ray actor class of each replica body, made on first use.
        self._actor_classes: dict[type, Any] = {}
        self._owns_connection = False
        #: The exceptions that mean "the actor is gone", not "the call failed".
        self.lost: tuple[type[Exception], ...] = ()
        #: Of those, the one a new call gets from an actor Ray will not restart.
        self.died: tuple[type[Exception], ...] = ()

    async def connect(self) -> None:
        """Connect unless connected: ``MissingExtra`` without ray, ``PlacementInfeasible``
        when nothing answers at the address."""
        if not self._connected:
            await asyncio.to_thread(self._connect)

    async def actor_class(self, body: type[ReplicaBody] = Replica) -> Any:
        """The Ray actor class of ``body``, connecting first if need be."""
        await self.connect()
        if body not in self._actor_classes:
            import ray

            remote = ray.remote(concurrency_groups={_HEALTH: 1})  # type: ignore[call-overload]
            self._actor_classes[body] = remote(body)
        return self._actor_classes[body]

    def _connect(self) -> None:
        try:
            import ray
            import ray.exceptions as errors
        except ImportError:
            raise MissingExtra("ray", "ray") from None
        if not ray.is_initialized():
            address = self.settings.ray_address
            try:
                _probe(address)  # ray.init retries an unreachable address for minutes
                ray.init(
                    address=address,
                    namespace="maas",
                    log_to_driver=False,
                    logging_level=logging.WARNING,
                )
            except (OSError, RuntimeError) as exc:  # ConnectionError is an OSError
                raise PlacementInfeasible(
                    f"cannot reach the Ray cluster at {address}: {exc}",
                    details={"ray_address": address},
                    retry_after=5.0,
                ) from None
            self._owns_connection = True
        self.lost = (
            errors.RayActorError,
            errors.WorkerCrashedError,
            errors.NodeDiedError,
            errors.ObjectLostError,
            errors.OwnerDiedError,
        )
        self.died = (errors.ActorDiedError,)
        self._connected = True

    def demand(self, instances: int, cpus: float, memory_bytes: int | None) -> dict[str, float]:
        """What one replica asks, checked against the cluster's live nodes: raises
        ``PlacementInfeasible`` unless ``instances`` of them fit (blocking)."""
        nodes = self.live_nodes()
        ask: dict[str, float] = {"CPU": cpus}
        if memory_bytes is not None:
            ask["memory"] = float(memory_bytes)
        if any(SLOT_RESOURCE in node for node in nodes):
            ask[SLOT_RESOURCE] = 1.0
        fit = room(nodes, ask)
        if fit < instances:
            largest = max((node.get("CPU", 0.0) for node in nodes), default=0.0)
            raise PlacementInfeasible(
                f"{instances} replicas asking {_describe(ask)} each do not fit the cluster: "
                f"its {len(nodes)} nodes hold {fit} (the largest has {largest:g} CPUs); "
                "add nodes or ask less (cpus, memory_bytes, instances)",
                details={"instances": instances, "per_replica": ask, "room": fit},
            )
        return ask

    def nodes(self) -> list[ClusterNode]:
        """Every node the cluster knows, alive or not, with its free resources (blocking;
        connects first if need be)."""
        if not self._connected:
            self._connect()
        import ray

        # Ray's public per-node view (ray.util.state) needs the dashboard, which a
        # cluster may run without; the GCS answers this one in every case.
        from ray._private.state import available_resources_per_node

        free = available_resources_per_node()  # type: ignore[no-untyped-call]
        found: list[ClusterNode] = []
        for node in ray.nodes():  # type: ignore[no-untyped-call]
            resources = {
                name: value
                for name, value in node.get("Resources", {}).items()
                if not name.startswith("node:")  # Ray's own per-node marker resources
            }
            found.append(
                ClusterNode(
                    node_id=node["NodeID"],
                    address=node.get("NodeManagerAddress", ""),
                    alive=bool(node.get("Alive")),
                    is_head="node:__internal_head__" in node.get("Resources", {}),
                    resources=resources,
                    available={
                        k: v for k, v in free.get(node["NodeID"], {}).items() if k in resources
                    },
                )
            )
        return found

    def live_nodes(self) -> list[dict[str, float]]:
        """The total resources of each live node (blocking; connected first)."""
        import ray

        return [node["Resources"] for node in ray.nodes() if node.get("Alive")]  # type: ignore[no-untyped-call]

    def close(self) -> None:
        """Disconnect (blocking); the cluster and other servers' actors stay."""
        if self._owns_connection:
            import ray

            ray.shutdown()
            self._owns_connection = False
        self._connected = False
        self._actor_classes.clear()


def _probe(address: str | None, timeout_s: float = 5.0) -> None:
    """Raise ``OSError`` unless something listens at ``host:port`` (other forms of
    address, such as ``auto``, are left to Ray)."""
    host, _, port = (address or "").rpartition(":")
    if host and port.isdigit():
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()


def room(nodes: list[dict[str, float]], ask: dict[str, float]) -> int:
    """How many actors asking ``ask`` the ``nodes`` hold when empty."""
    return sum(min(int(node.get(k, 0.0) // v) for k, v in ask.items()) for node in nodes)


def _describe(ask: dict[str, float]) -> str:
    return ", ".join(f"{value:g} {name}" for name, value in ask.items())


class _Lost(Exception):
    """The replica died under this call: another may take it."""


class _Handle:
    """The server's view of one replica: its actor, what the last ping said, and its
    metric series (by its index, which a restart keeps)."""

    def __init__(self, actor: Any, index: int, labels: tuple[str, str]) -> None:
        self.actor = actor
        self.index = index
        self.pid: int | None = None
        self.node: str | None = None
        self.alive = False
        self.in_flight = 0
        self._labels = (*labels, str(index))
        self._up_on: str | None = None  # the node whose REPLICA_UP series reads 1
        self.in_flight_gauge = REPLICA_IN_FLIGHT.labels(*self._labels)
        self.seconds = REPLICA_CALL_SECONDS.labels(*self._labels)
        self.calls = {
            outcome: REPLICA_CALLS.labels(*self._labels, outcome)
            for outcome in ("ok", "error", "lost")
        }

    def mark(self, alive: bool, pid: int | None = None, node: str | None = None) -> None:
        """Record what a ping or a call found; ``REPLICA_UP`` follows."""
        self.alive = alive
        if pid is not None:
            self.pid = pid
        if node is not None:
            self.node = node
        up_on = self.node if alive else None
        if up_on != self._up_on:
            if self._up_on is not None:
                REPLICA_UP.labels(*self._labels, self._up_on).set(0)
            if up_on is not None:
                REPLICA_UP.labels(*self._labels, up_on).set(1)
            self._up_on = up_on

    def status(self) -> dict[str, Any]:
        return {
            "replica": self.index,
            "alive": self.alive,
            "pid": self.pid,
            "node": self.node,
            "in_flight": self.in_flight,
        }


class RayInstances:
    """A deployment's instances as Ray actors, spread over the cluster's nodes."""

    kind = "ray"
    #: What each actor runs.
    body: type[ReplicaBody] = Replica

    def __init__(
        self,
        cluster: RayCluster,
        target: ReplicaTarget,
        instances: int,
        *,
        cpus: float = 1.0,
        memory_bytes: int | None = None,
        labels: tuple[str, str] = ("", ""),
    ) -> None:
        self._cluster = cluster
        self._target = target
        self._count = instances
        self._cpus = cpus
        self._memory_bytes = memory_bytes
        self._restarts = WORKER_RESTARTS.labels(*labels)
        self._labels = labels
        self._label = ":".join(labels)
        self._replicas: list[_Handle] = []
        self._monitor: asyncio.Task[None] | None = None
        self._actor_class: Any = None
        self._options: dict[str, Any] = {}

    @property
    def pids(self) -> list[int]:
        return [r.pid for r in self._replicas if r.alive and r.pid is not None]

    @property
    def nodes(self) -> list[str]:
        """The Ray node ids of the live replicas, one per replica."""
        return [r.node for r in self._replicas if r.alive and r.node is not None]

    @property
    def replicas(self) -> list[dict[str, Any]]:
        """Each replica: its index, whether it answers, its pid, node and calls in flight."""
        return [r.status() for r in self._replicas]

    @property
    def is_alive(self) -> bool:
        return any(r.alive for r in self._replicas)

    @property
    def capacity(self) -> int:
        """Calls worth sending at once: each actor queues a few, as a worker's pipe does."""
        return self._count * PIPELINE_DEPTH

    async def start(self) -> None:
        """Check the cluster has room, create the actors and wait until every one has
        loaded; any failure removes them all and fails the load."""
        actor_class = await self._cluster.actor_class(self.body)
        ask = await asyncio.to_thread(
            self._cluster.demand, self._count, self._cpus, self._memory_bytes
        )
        settings = self._cluster.settings
        options: dict[str, Any] = {
            "num_cpus": ask["CPU"],
            "scheduling_strategy": "SPREAD",  # a lost node must not take every replica
            "max_restarts": settings.max_restarts,
            "max_task_retries": 0,  # retried here, on another replica, not queued behind
        }
        if "memory" in ask:
            options["memory"] = int(ask["memory"])
        if SLOT_RESOURCE in ask:
            options["resources"] = {SLOT_RESOURCE: ask[SLOT_RESOURCE]}
        self._actor_class, self._options = actor_class, options
        self._replicas = [
            _Handle(self._new_actor(), index, self._labels) for index in range(self._count)
        ]
        try:
            async with asyncio.timeout(settings.ready_timeout_s):
                answers = await asyncio.gather(*(self._ping(r) for r in self._replicas))
        except TimeoutError:
            await self.close()
            raise PlacementInfeasible(
                f"the {self._count} replicas of {self._label} were not placed and loaded "
                f"within {settings.ready_timeout_s:g} s: the cluster's free resources may be "
                "taken by other models",
                details={"instances": self._count, "per_replica": ask},
                retry_after=settings.ready_timeout_s,
            ) from None
        except BaseException:
            await self.close()
            raise
        for replica, (pid, node, error) in zip(self._replicas, answers, strict=True):
            if error is not None:
                await self.close()
                raise rebuild_error(error)
            replica.mark(True, pid, node)
        self._monitor = asyncio.get_running_loop().create_task(
            self._watch(), name=f"ray replicas of {self._label}"
        )

    def _new_actor(self) -> Any:
        return self._actor_class.options(**self._options).remote(self._target)

    async def _ping(self, replica: _Handle) -> tuple[int, str, Any]:
        answer: tuple[int, str, Any] = await replica.actor.ready.options(
            concurrency_group=_HEALTH
        ).remote()
        return answer

    async def _watch(self) -> None:
        """Ping every replica each ``health_interval_s``: a dead one stops taking calls,
        one that Ray restarted takes them again (with its new pid and node)."""
        while True:
            await asyncio.sleep(self._cluster.settings.health_interval_s)
            await asyncio.gather(*(self._check(r) for r in self._replicas))

    async def _check(self, replica: _Handle) -> None:
        gone: tuple[type[Exception], ...] = (TimeoutError, *self._cluster.lost)
        try:
            async with asyncio.timeout(_PING_TIMEOUT_S):
                pid, node, error = await self._ping(replica)
        except self._cluster.died:
            await self._replace(replica)
            return
        except gone:
            if replica.alive:
                log.error(
                    "a replica of %s (pid %s) is lost; Ray restarts it", self._label, replica.pid
                )
            replica.mark(False)
            return
        if error is not None:  # restarted, but its load failed: it takes no calls
            if replica.alive:
                log.error("a replica of %s failed to load again: %s", self._label, error[1])
            replica.mark(False)
            return
        if not replica.alive:
            log.info("a replica of %s is back (pid %s)", self._label, pid)
            self._restarts.inc()
        replica.mark(True, pid, node)

    async def _replace(self, replica: _Handle) -> None:
        """Ray will not restart this actor (its ``max_restarts`` are spent): a new one
        takes its place, and loads; the old one is killed in case Ray thought otherwise."""
        log.error(
            "a replica of %s (pid %s) is dead for good; replacing it", self._label, replica.pid
        )
        replica.mark(False)
        old, replica.actor = replica.actor, self._new_actor()
        await asyncio.to_thread(_kill, [old])

    def _pick(self, not_this: _Handle | None = None) -> _Handle:
        live = [r for r in self._replicas if r.alive and r is not not_this]
        if not live:
            raise WorkerCrashed("no live replica of this model; Ray restarts them", retry_after=1.0)
        return min(live, key=lambda r: r.in_flight)

    async def predict(
        self, inputs: dict[str, np.ndarray], outputs: list[str]
    ) -> dict[str, np.ndarray]:
        """Call the least busy live replica; if it dies under the call, once more on
        another (inference is idempotent)."""
        first = self._pick()
        try:
            return await self._call(first, inputs, outputs)
        except _Lost:
            log.warning("a replica of %s died under a call; retrying on another", self._label)
        try:
            return await self._call(self._pick(not_this=first), inputs, outputs)
        except _Lost:
            raise WorkerCrashed(retry_after=1.0) from None

    async def _call(
        self, replica: _Handle, inputs: dict[str, np.ndarray], outputs: list[str]
    ) -> dict[str, np.ndarray]:
        replica.in_flight += 1
        replica.in_flight_gauge.inc()
        started = time.perf_counter()
        try:
            status, payload = await replica.actor.predict.remote(inputs, outputs)
        except self._cluster.lost:
            replica.calls["lost"].inc()
            replica.mark(False)  # until a ping finds it restarted
            raise _Lost from None
        finally:
            replica.in_flight -= 1
            replica.in_flight_gauge.dec()
        replica.seconds.observe(time.perf_counter() - started)
        if status != "ok":
            replica.calls["error"].inc()
            raise rebuild_error(payload)
        replica.calls["ok"].inc()
        result: dict[str, np.ndarray] = payload
        return result

    async def close(self) -> None:
        """Stop watching and remove the actors for good (no restart)."""
        if self._monitor is not None:
            self._monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._monitor
            self._monitor = None
        replicas, self._replicas = self._replicas, []
        for replica in replicas:
            replica.mark(False)
        if replicas:
            await asyncio.to_thread(_kill, [r.actor for r in replicas])


def _kill(actors: list[Any]) -> None:
    import ray

    for actor in actors:
        with contextlib.suppress(Exception):  # already gone is gone
            ray.kill(actor, no_restart=True)
