"""Model instances as Ray actors, for when one machine is not enough.

The server stays the gateway: HTTP, keys, limits, the registry and the dynamic batcher
all run in it, and only the model calls leave it, to Ray actors (one per instance of a
deployment) that Ray places on the cluster's nodes by the resources they ask. Ray
Serve's own HTTP proxy was measured at a tenth of one uvicorn process's throughput and
lost a request when a replica died; plain actors behind our gateway kept most of it, so
placement, restarts and the health ping are what maas takes from Ray.

An actor loads its model itself, from the artifact store as its node reaches it (the
store's directory shared by every node, or an fsspec URL each node opens with its own
credentials): the server never ships the bytes.

The calls themselves do not go as Ray tasks: one task per batch cost about 1.4 ms of
latency and 225 µs of CPU more than a local worker's pipe, a third of iris's
throughput. Each replica listens on a socket of its own on its node's address and
reports it, with a random token, in its answer to the ping; the gateway keeps one
connection to each and sends the batches there, several in flight, in the messages and
frames of the local worker processes (``maas.serving.replica_socket``). A replica whose
socket the gateway cannot reach (a firewall that lets only Ray's ports through) takes
its calls as Ray calls (``Replica.predict``), the one road that needs no port of ours;
language models' replicas (``ray_generation``) keep Ray calls, whose streaming
generators carry their answers' pieces.

Replicas are shared by every server of the cluster: each is a named, detached actor
(namespace ``maas``) whose name says what it serves (the artifact, the store it is read
from, the load options and the resources asked) and which of a deployment's instances
it is, so a second server that loads the same version with the same spec attaches to
the replicas the first created instead of doubling them. Detached actors outlive the
server that created them, so each replica removes itself once no server has pinged it
for ``orphan_timeout_s``; a server that shuts down (or evicts a version to make room)
only lets go of its replicas, while one that retires a version for the registry (an
unload, a redeploy, a delete, an alias moved away) removes them: every other server
learns of that change within a second (``maas.services.changes``) and, until then,
retries a call that hit a removed replica and replaces it like any replica Ray will not
restart.

Failures: an actor that dies is restarted by Ray (``max_restarts``), on another node if
its node is gone; a call it held (its socket broke: the dead process's kernel closes it
at once, or Ray said the actor is lost) is retried once on another live replica (V2
inference is idempotent), so one lost replica fails no call while another lives. A
replica whose ping fails has its socket closed too, so that calls held by a node that
vanished without a word go elsewhere instead of waiting for TCP to notice. A replica is
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
import hashlib
import logging
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from maas.config import ClusterSettings
from maas.errors import MaasError, MissingExtra, PlacementInfeasible, RuntimeFailure, WorkerCrashed
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
from maas.serving.framed import error_payload, rebuild_error
from maas.serving.local_artifacts import local_artifact
from maas.serving.process_workers import PIPELINE_DEPTH, LoadTarget, WorkerModels
from maas.serving.replica_socket import (
    ChannelLost,
    ListenerAddress,
    ReplicaChannel,
    ReplicaListener,
)

__all__ = [
    "NAMESPACE",
    "SLOT_RESOURCE",
    "ClusterNode",
    "RayCluster",
    "RayInstances",
    "Replica",
    "ReplicaTarget",
    "replica_name",
    "room",
]

log = logging.getLogger("maas.serving")

#: A custom resource an operator gives the nodes meant for models
#: (``ray start --resources '{"model_slot": 4}'``); asked one per replica if any node has it.
SLOT_RESOURCE = "model_slot"
_KEY = "model"
#: How long a replica's socket found unreachable waits before the next try (doubling
#: after each failure, up to the second), its calls going through Ray meanwhile.
_RECONNECT_AFTER_S = 1.0
_RECONNECT_MAX_S = 30.0
_HEALTH = "health"
#: Nodes remembered per artifact as holding it in their cache.
_REMEMBERED_NODES = 16
#: Longest a health ping may take before its replica counts as lost.
_PING_TIMEOUT_S = 5.0
#: A replica's reaper that wakes this much later than it meant to was not running.
_STALL_S = 1.0
#: The Ray namespace of every server's replicas: where their names are looked up.
NAMESPACE = "maas"


@dataclass(frozen=True)
class ReplicaTarget:
    """What a replica loads, sent to its actor: the store as every node reaches it and
    the artifact's digest, never a path of the server's own disk."""

    framework: str
    store_url: str
    digest: str
    options: LoadOptions
    extract_limits: ExtractLimits
    #: The replica removes itself once no server has pinged it for this long.
    orphan_timeout_s: float = 60.0


def replica_name(target: ReplicaTarget, options: dict[str, Any], index: int) -> str:
    """The Ray name of instance ``index`` of the replicas serving ``target`` with the
    actor ``options``: equal for every server that would create the same replica.

    What the replica loads and how (the store included: another store is another
    deployment, and tests each have their own) and what it asks of the cluster make it
    up; not the server's cache directory (a per-node cache of derived files, keyed by
    content), nor the orphan timeout, nor the instance count, so scaling out keeps the
    replicas there are."""
    identity = repr(
        (
            target.framework,
            target.store_url,
            target.digest,
            replace(target.options, cache_dir=None),
            target.extract_limits,
            sorted((key, repr(value)) for key, value in options.items()),
        )
    )
    spec = hashlib.sha256(identity.encode()).hexdigest()[:16]
    return f"maas-replica-{target.digest.removeprefix('sha256:')[:12]}-{spec}-{index}"


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
    raised: an actor whose constructor raises would be restarted by Ray forever.

    ``ready`` is also every server's keep-alive: replicas are detached (shared by the
    servers of a cluster), so once its load ends a body starts a thread that removes the
    actor for good, whatever ``max_restarts``, when no ping came for
    ``orphan_timeout_s``: no server is left to remove it."""

    _error: tuple[str, str, dict[str, Any]] | None = None
    _pinged: float = 0.0
    #: Where the replica takes its calls besides Ray (``None``: through Ray only).
    _listener: ReplicaListener | None = None

    def _reap_when_orphaned_after(self, timeout_s: float) -> None:
        """Start the thread that removes this actor once no server pinged it for
        ``timeout_s`` (counted from now: the end of the load, however long it took)."""
        self._pinged = time.monotonic()
        threading.Thread(
            target=self._reap_when_orphaned,
            args=(timeout_s,),
            name="orphan reaper",
            daemon=True,
        ).start()

    def ready(
        self,
    ) -> tuple[int, str, tuple[str, str, dict[str, Any]] | None, ListenerAddress | None]:
        """This process's pid, its node's id, the load's error if it failed, and the
        address of its socket if it opened one."""
        import ray

        self._pinged = time.monotonic()
        listener = self._listener.address if self._listener is not None else None
        return os.getpid(), ray.get_runtime_context().get_node_id(), self._error, listener

    def _reap_when_orphaned(self, timeout_s: float) -> None:
        """Kill this actor with ``no_restart`` once no server has pinged it for
        ``timeout_s``: an exit Ray would count as a crash and restart it forever.

        Time this process did not run (stopped, or starved of CPU) is not the servers'
        silence: their pings were waiting for it. A check that wakes far later than it
        slept counts the replica as pinged just now."""
        import ray

        interval = min(timeout_s / 4, 1.0)
        checked = time.monotonic()
        while True:
            time.sleep(interval)
            now = time.monotonic()
            if now - checked > interval + _STALL_S:
                self._pinged = max(self._pinged, now)
            checked = now
            if now - self._pinged >= timeout_s:
                break
        log.warning("no server pinged this replica for %.0f s; it removes itself", timeout_s)
        ray.kill(ray.get_runtime_context().current_actor, no_restart=True)


def replica_artifact(target: ReplicaTarget) -> Path:
    """The artifact on this node's disk, fetched from the store as this node reaches it."""
    store = ArtifactStore(target.store_url)
    return local_artifact(store, target.digest, target.options.cache_dir, target.extract_limits)


class Replica(ReplicaBody):
    """The body of one actor: loads at creation (again after each restart), opens its
    socket on its node's address, then answers calls one at a time, as a worker
    process does, whether they come by the socket or as Ray calls (``predict``)."""

    def __init__(self, target: ReplicaTarget) -> None:
        self._models = WorkerModels()
        self._one_at_a_time = threading.Lock()
        try:
            path = replica_artifact(target)
            self._models.load(_KEY, LoadTarget(target.framework, path, target.options))
        except Exception as exc:  # reported by ready(), raised in the server
            self._error = error_payload(exc)
        else:
            self._listen()
        self._reap_when_orphaned_after(target.orphan_timeout_s)

    def _listen(self) -> None:
        import ray.util

        host = ray.util.get_node_ip_address()
        try:
            self._listener = ReplicaListener(host, self._answer)
        except OSError as exc:  # calls then come through Ray only
            log.warning("this replica cannot listen on %s (%s); calls come through Ray", host, exc)

    def _answer(self, message: tuple[Any, ...]) -> Any:
        """A call that came by the socket: ``("call", id, key, inputs, outputs)``."""
        kind, _, _, inputs, outputs = message
        if kind != "call":
            raise RuntimeFailure("a replica takes calls only")
        return self._run(inputs, outputs)

    def _run(self, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        with self._one_at_a_time:
            return self._models.runtimes[_KEY].run_checked(inputs, outputs)

    def predict(self, inputs: dict[str, np.ndarray], outputs: list[str]) -> tuple[str, Any]:
        """A call through Ray, for a gateway that cannot reach the socket."""
        try:
            return "ok", self._run(inputs, outputs)
        except Exception as exc:  # the caller's error, not the actor's death
            return "error", error_payload(exc)


class RayCluster:
    """The server's connection to a Ray cluster, made on the first model or job placed
    there; one per server, shared by the models and the jobs (``maas.jobs.ray_backend``)."""

    def __init__(self, settings: ClusterSettings) -> None:
        self.settings = settings
        self._connected = False
        self._connecting = threading.Lock()
        #: The Ray actor class of each replica body, made on first use.
        self._actor_classes: dict[type, Any] = {}
        self._owns_connection = False
        #: The exceptions that mean "the actor is gone", not "the call failed".
        self.lost: tuple[type[Exception], ...] = ()
        #: Of those, the one a new call gets from an actor Ray will not restart.
        self.died: tuple[type[Exception], ...] = ()
        #: How many of this server's deployments use each replica (by name): a redeploy
        #: that keeps the replicas' spec hands them from the old deployment to the new.
        self._holders: Counter[str] = Counter()
        #: The nodes where a replica of each artifact (by digest) last loaded: its file
        #: is in their cache, so a new replica there starts without fetching it.
        self._artifact_nodes: dict[str, list[str]] = {}

    def note_artifact(self, digest: str, node: str) -> None:
        nodes = self._artifact_nodes.setdefault(digest, [])
        if node in nodes:
            nodes.remove(node)
        nodes.append(node)
        del nodes[:-_REMEMBERED_NODES]

    def artifact_nodes(self, digest: str) -> list[str]:
        """The nodes known to hold ``digest`` in their cache, most recent first."""
        return self._artifact_nodes.get(digest, [])[::-1]

    def hold(self, names: list[str]) -> None:
        self._holders.update(names)

    def release(self, names: list[str]) -> set[str]:
        """Let go of replicas; the names no deployment of this server holds any more."""
        self._holders.subtract(names)
        free = {name for name in names if self._holders[name] <= 0}
        for name in free:
            del self._holders[name]
        return free

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

            remote = ray.remote(concurrency_groups={_HEALTH: 1})
            self._actor_classes[body] = remote(body)
        return self._actor_classes[body]

    def _connect(self) -> None:
        # Models loading side by side at start (and jobs) connect at once, from threads:
        # a second ray.init while the first runs fails on an assertion inside Ray.
        with self._connecting:
            if not self._connected:
                self._connect_once()

    def _connect_once(self) -> None:
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
                    namespace=NAMESPACE,
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

        free = available_resources_per_node()
        found: list[ClusterNode] = []
        for node in ray.nodes():
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

        return [node["Resources"] for node in ray.nodes() if node.get("Alive")]

    def spread(self, count: int, ask: dict[str, float], first: list[str]) -> list[str]:
        """Up to ``count`` distinct live nodes with room for ``ask`` now: those of
        ``first`` (in order), then the others by most CPUs free (blocking)."""
        room = {
            node.node_id: node.available.get("CPU", 0.0)
            for node in self.nodes()
            if node.alive and all(node.available.get(k, 0.0) >= v for k, v in ask.items())
        }
        preferred = [node for node in first if node in room]
        others = sorted(set(room) - set(preferred), key=lambda node: -room[node])
        return [*preferred, *others][:count]

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


#: A replica's answer to the ping: pid, node id, load error, socket address.
_Ready = tuple[int, str, Any, "ListenerAddress | None"]


class _Lost(Exception):
    """The replica died under this call: another may take it."""


class _Handle:
    """The server's view of one replica: its actor, what the last ping said, and its
    metric series (by its index, which a restart keeps)."""

    def __init__(self, name: str, actor: Any, index: int, labels: tuple[str, str]) -> None:
        self.name = name
        self.actor = actor
        self.index = index
        self.pid: int | None = None
        self.node: str | None = None
        self.alive = False
        #: Whether its first ping was answered (it loaded, for this server or another).
        self.answered = False
        self.in_flight = 0
        #: The open connection to the replica's socket; ``None``: calls go through Ray.
        self.channel: ReplicaChannel | None = None
        #: The socket last connected to, or tried and found unreachable.
        self.listener: ListenerAddress | None = None
        #: When an unreachable socket is tried again, and how long after the next failure.
        self.reconnect_at = 0.0
        self.reconnect_wait_s = _RECONNECT_AFTER_S
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
            # How the calls travel: the replica's own socket, or Ray (unreachable socket).
            "calls_by": "socket" if self.channel is not None else "ray",
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
        self._target = replace(target, orphan_timeout_s=cluster.settings.orphan_timeout_s)
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
        """Check the cluster has room, create the actors (or find those another server
        created) and wait until every one has loaded. A load error of the artifact
        removes them all; a failure of this server's own (its deadline, a cancellation)
        removes only those no server can use (``_abandon``). Either fails the load."""
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
        names = [replica_name(self._target, options, index) for index in range(self._count)]
        self._cluster.hold(names)
        # One node each, as far as the nodes go: first those that already hold the
        # artifact (a redeploy, a version reloaded after an eviction), then those with
        # the most CPUs free; soft, so a node gone or full is no obstacle. (Ray's SPREAD
        # alone put two replicas on one node while another had room.)
        cached = self._cluster.artifact_nodes(self._target.digest)
        nodes = await asyncio.to_thread(self._cluster.spread, self._count, ask, cached)
        self._replicas = [
            _Handle(name, self._new_actor(name, near=_at(nodes, index)), index, self._labels)
            for index, name in enumerate(names)
        ]
        try:
            async with asyncio.timeout(settings.ready_timeout_s):
                answers = await self._first_pings()
        except TimeoutError:
            await self._abandon(remove_unanswered=True)
            raise PlacementInfeasible(
                f"the {self._count} replicas of {self._label} were not placed and loaded "
                f"within {settings.ready_timeout_s:g} s: the cluster's free resources may be "
                "taken by other models",
                details={"instances": self._count, "per_replica": ask},
                retry_after=settings.ready_timeout_s,
            ) from None
        except BaseException:  # cancelled, or a replica lost: nothing wrong with the rest
            await self._abandon(remove_unanswered=False)
            raise
        for _, _, error, _ in answers:
            if error is not None:  # the artifact fails to load: it would on any server
                await self.close()
                raise rebuild_error(error)
        pairs = zip(self._replicas, answers, strict=True)
        await asyncio.gather(*(self._connect(r, listener) for r, (*_, listener) in pairs))
        for replica, (pid, node, _, _) in zip(self._replicas, answers, strict=True):
            replica.mark(True, pid, node)
            self._cluster.note_artifact(self._target.digest, node)
        self._monitor = asyncio.get_running_loop().create_task(
            self._watch(), name=f"ray replicas of {self._label}"
        )

    def _new_actor(self, name: str, near: str | None = None) -> Any:
        """The replica called ``name``: the live one if any server created it, else a
        new one (detached: it outlives this server, until no server pings it), on the
        node ``near`` if it can be."""
        options = self._options
        if near is not None:
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            # Soft, and spilling when the node is busy: a redeploy asking more CPUs
            # than the old replicas leave free there must go elsewhere, not wait.
            near_first = NodeAffinitySchedulingStrategy(near, soft=True, _spill_on_unavailable=True)
            options = {**options, "scheduling_strategy": near_first}
        return self._actor_class.options(
            **options,
            name=name,
            namespace=NAMESPACE,
            lifetime="detached",
            get_if_exists=True,
        ).remote(*self._actor_arguments())

    def _actor_arguments(self) -> tuple[Any, ...]:
        """What the body's constructor takes (a language model's takes more)."""
        return (self._target,)

    async def _first_pings(self) -> list[_Ready]:
        """Every replica's first answer, the loaded kept alive meanwhile."""
        keep_alive = asyncio.create_task(self._keep_alive_while_others_load())
        try:
            return await asyncio.gather(*(self._first_ping(r) for r in self._replicas))
        finally:
            keep_alive.cancel()

    async def _first_ping(self, replica: _Handle) -> _Ready:
        """The first ping of a replica; one found as it removed itself (orphaned just
        before this server came) is created anew."""
        try:
            answer = await self._ping(replica)
        except self._cluster.died:
            await asyncio.to_thread(_kill, [replica.actor])
            replica.actor = self._new_actor(replica.name)
            answer = await self._ping(replica)
        replica.answered = True
        return answer

    async def _keep_alive_while_others_load(self) -> None:
        """Ping the replicas that have loaded while the others still load: each counts
        the servers' silence from the end of its own load, and ``_watch`` starts only
        once every one has answered, so one that loaded ``orphan_timeout_s`` before the
        slowest would remove itself as orphaned. What the pings find is ``_watch``'s
        business once the start is over."""
        interval = self._cluster.settings.health_interval_s
        while True:
            await asyncio.sleep(interval)
            loaded = [r for r in self._replicas if r.answered]
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_PING_TIMEOUT_S):
                    await asyncio.gather(*(self._ping(r) for r in loaded), return_exceptions=True)

    async def _ping(self, replica: _Handle) -> _Ready:
        answer: _Ready = await replica.actor.ready.options(concurrency_group=_HEALTH).remote()
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
                pid, node, error, listener = await self._ping(replica)
        except self._cluster.died:
            await self._replace(replica)
            return
        except gone:
            if replica.alive:
                log.error(
                    "a replica of %s (pid %s) is lost; Ray restarts it", self._label, replica.pid
                )
            self._lose(replica)  # its calls in flight on the socket go elsewhere
            return
        if error is not None:  # restarted, but its load failed: it takes no calls
            if replica.alive:
                log.error("a replica of %s failed to load again: %s", self._label, error[1])
            self._lose(replica)
            return
        await self._connect(replica, listener)
        if not replica.alive:
            log.info("a replica of %s is back (pid %s)", self._label, pid)
            self._restarts.inc()
            self._cluster.note_artifact(self._target.digest, node)
        replica.mark(True, pid, node)

    async def _replace(self, replica: _Handle) -> None:
        """Ray will not restart this actor (its ``max_restarts`` are spent): a new one
        takes its place, and loads; the old one is killed in case Ray thought otherwise."""
        log.error(
            "a replica of %s (pid %s) is dead for good; replacing it", self._label, replica.pid
        )
        self._lose(replica)
        await asyncio.to_thread(_kill, [replica.actor])  # first: the name is then free
        replica.actor = self._new_actor(replica.name)

    async def _connect(self, replica: _Handle, listener: ListenerAddress | None) -> None:
        """Open a connection to the replica's socket unless one is open to it.

        One that cannot be reached leaves its calls to Ray, and is tried again at the
        first health round ``_RECONNECT_AFTER_S`` later (twice as long after each
        failure, up to ``_RECONNECT_MAX_S``): not at every round, which would cost each
        a connect timeout, and not never, since a connect can fail for a while only (a
        loaded node; a replica restarted between its ping and the connect, whose new
        socket the next ping brings at once)."""
        channel = replica.channel
        if listener is None:
            return
        if listener == replica.listener and (
            channel is not None or time.monotonic() < replica.reconnect_at
        ):
            return  # connected to it, or tried and failed a moment ago
        if channel is not None:
            channel.close()
        replica.channel, replica.listener = None, listener
        try:
            channel = await ReplicaChannel.open(listener, self._on_lost(replica))
        except (OSError, TimeoutError, ChannelLost) as exc:
            wait_s = replica.reconnect_wait_s
            replica.reconnect_at = time.monotonic() + wait_s
            replica.reconnect_wait_s = min(2 * wait_s, _RECONNECT_MAX_S)
            log.warning(
                "cannot reach the socket of a replica of %s (pid %s) at %s:%s (%s); "
                "its calls go through Ray, and it is tried again in %g s",
                self._label,
                replica.pid,
                listener[0],
                listener[1],
                type(exc).__name__,
                wait_s,
            )
            return
        replica.reconnect_wait_s = _RECONNECT_AFTER_S
        if replica.listener == listener:  # not lost meanwhile
            replica.channel = channel
        else:
            channel.close()

    def _on_lost(self, replica: _Handle) -> Callable[[ReplicaChannel], None]:
        """What a replica's connection does when it breaks: the replica takes no calls
        until a ping finds it (restarted or not) and connects again."""

        def lost(channel: ReplicaChannel) -> None:
            if replica.channel is channel:
                replica.channel, replica.listener = None, None
                replica.mark(False)

        return lost

    def _lose(self, replica: _Handle) -> None:
        """Take no calls to ``replica`` and fail those in flight on its socket (each
        goes once to another replica): its process may be gone with its node, whose
        connection would never say so."""
        replica.mark(False)
        channel, replica.channel, replica.listener = replica.channel, None, None
        if channel is not None:
            channel.close()

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
        lost: tuple[type[Exception], ...] = (ChannelLost, *self._cluster.lost)
        channel = replica.channel
        started = time.perf_counter()
        try:
            result = await self._send(replica, channel, inputs, outputs)
        except lost:
            replica.calls["lost"].inc()
            if replica.channel is channel:  # not connected again since
                self._lose(replica)  # until a ping finds it restarted
            raise _Lost from None
        except MaasError:
            replica.seconds.observe(time.perf_counter() - started)
            replica.calls["error"].inc()
            raise
        finally:
            replica.in_flight -= 1
            replica.in_flight_gauge.dec()
        replica.seconds.observe(time.perf_counter() - started)
        replica.calls["ok"].inc()
        return result

    async def _send(
        self,
        replica: _Handle,
        channel: ReplicaChannel | None,
        inputs: dict[str, np.ndarray],
        outputs: list[str],
    ) -> dict[str, np.ndarray]:
        """By the replica's socket if connected, else as a Ray call."""
        if channel is not None:
            return await channel.call(_KEY, inputs, outputs)
        status, payload = await replica.actor.predict.remote(inputs, outputs)
        if status != "ok":
            raise rebuild_error(payload)
        result: dict[str, np.ndarray] = payload
        return result

    async def close(self) -> None:
        """Stop watching and remove the actors for good (no restart), but those another
        deployment of this server still uses (a redeploy that kept their spec)."""
        await self._let_go(remove=lambda replica: True)

    async def detach(self) -> None:
        """Stop watching and let go of the actors, which stay for other servers; those
        none pings remove themselves after ``orphan_timeout_s``."""
        await self._let_go(remove=lambda replica: False)

    async def _abandon(self, *, remove_unanswered: bool) -> None:
        """Give up a load that failed for this server's own reason (its deadline, a
        cancellation, a replica lost under the first ping), not the artifact's.

        The replicas may be other servers' too (they are shared by name), so removing
        them all, as ``close`` does, would take a working model away from every server
        because this one gave up. Those that answered are only let go; with
        ``remove_unanswered``, those that never answered (not placed, or stuck loading
        past the deadline) are removed, since no server can use them either. Replicas
        let go that no server pings remove themselves after ``orphan_timeout_s``.
        """
        await self._let_go(remove=lambda replica: remove_unanswered and not replica.answered)

    async def _let_go(self, *, remove: Callable[[_Handle], bool]) -> None:
        """Stop watching, let go of every replica, and remove those ``remove`` picks
        that no other deployment of this server holds."""
        replicas = await self._stop()
        free = self._cluster.release([r.name for r in replicas])
        doomed = [r for r in replicas if r.name in free and remove(r)]
        if doomed:
            await self._retire(doomed)

    async def _retire(self, replicas: list[_Handle]) -> None:
        """Remove replicas no deployment of this server holds any more."""
        await asyncio.to_thread(_kill, [r.actor for r in replicas])

    async def _stop(self) -> list[_Handle]:
        if self._monitor is not None:
            self._monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._monitor
            self._monitor = None
        replicas, self._replicas = self._replicas, []
        for replica in replicas:
            self._lose(replica)
        return replicas


def _at(nodes: list[str], index: int) -> str | None:
    return nodes[index] if index < len(nodes) else None


def _kill(actors: list[Any]) -> None:
    import ray

    for actor in actors:
        with contextlib.suppress(Exception):  # already gone is gone
            ray.kill(actor, no_restart=True)
