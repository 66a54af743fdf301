"""The set of deployments a server holds, keyed by model version.

``ModelManager`` resolves a reference (``iris``, ``iris:3``, ``iris:production``) to a
version, loads it at most once, keeps at most ``max_loaded_models`` loaded (the least
recently used unloads first) and says whether the server is ready: every version an
alias points to must be loaded, and zero loaded while some are expected is not ready.

It also owns the life of a request on the serving side (``predict``: timeout,
disconnect, shutdown) and the zero-downtime rollout of an alias: ``prepare`` loads and
warms the new version before the registry moves the alias, ``switch`` then retires the
versions no alias needs any more, each draining its in-flight calls first.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from maas.config import ClusterSettings, GenerationSettings, ServingSettings
from maas.errors import (
    MaasError,
    ModelNotFound,
    RequestTimeout,
    RolloutFailed,
    ShuttingDown,
)
from maas.protocols.management import VersionInfo
from maas.registry.archives import DEFAULT_EXTRACT_LIMITS, ExtractLimits
from maas.registry.artifacts import ArtifactStore
from maas.registry.service import RegistryService
from maas.runtimes.base import ImageLimits, LoadOptions
from maas.serving.deployment import Deployment, DeploymentState
from maas.serving.hangups import Disconnected, unless_disconnected
from maas.serving.heap import freeze_long_lived
from maas.serving.process_workers import ProcessPool, discard_spare_worker
from maas.serving.ray_instances import RayCluster
from maas.serving.workers import ThreadWorkers, Workers

__all__ = ["ModelManager"]

log = logging.getLogger("maas.serving")

T = TypeVar("T")
Selector = int | str | None


class ModelManager:
    #: How long a resolved reference is trusted before asking the registry again; other
    #: processes may have moved an alias, this process invalidates its own changes at once.
    resolve_ttl_s = 1.0

    def __init__(
        self,
        registry: RegistryService,
        store: ArtifactStore,
        settings: ServingSettings,
        workers: Workers | None = None,
        *,
        generation: GenerationSettings | None = None,
        cache_dir: Path | None = None,
        extract_limits: ExtractLimits = DEFAULT_EXTRACT_LIMITS,
        image_limits: ImageLimits | None = None,
        cluster: ClusterSettings | RayCluster | None = None,
    ) -> None:
        self._registry = registry
        self._extract_limits = extract_limits
        self._store = store
        self._settings = settings
        self._workers = workers or ThreadWorkers(settings.inference_threads)
        self._generation = generation or GenerationSettings()
        self._options = LoadOptions(
            trust_pickle=settings.trust_pickle,
            threads=settings.runtime_threads,
            cache_dir=cache_dir,
            sequences=self._generation.max_running,
            kv_cache_tokens=self._generation.kv_cache_tokens,
            images=image_limits or ImageLimits(),
        )
        self._deployments: dict[tuple[str, int], Deployment] = {}
        #: Worker processes that small models share; spawned with the first such model.
        self._shared = (
            ProcessPool(
                settings.shared_workers,
                labels=("(shared)", ""),
                backoff_initial_s=settings.worker_restart_backoff_s,
                backoff_max_s=settings.worker_restart_backoff_max_s,
            )
            if settings.shared_workers > 0
            else None
        )
        #: The Ray cluster that holds model replicas (connected on the first one); one
        #: given as a ``RayCluster`` is its caller's to close (the jobs share it).
        self._cluster: RayCluster | None = None
        self._owns_cluster = not isinstance(cluster, RayCluster)
        if isinstance(cluster, RayCluster):
            self._cluster = cluster
        elif cluster is not None and cluster.ray_address:
            self._cluster = RayCluster(cluster)
        self._resolved: dict[tuple[str, Selector], tuple[float, VersionInfo]] = {}
        self._expected: set[tuple[str, int]] = set()
        self._epoch = 0  # bumped by every invalidation: a resolve racing one retries
        #: The resolutions being renewed ahead of their expiry, one task each.
        self._renewing: dict[tuple[str, Selector], asyncio.Task[VersionInfo | None]] = {}
        self._redeploys: dict[tuple[str, int], asyncio.Lock] = {}
        self._started = False
        #: The aliased versions are loading at start (one heap freeze after them all).
        self._loading_at_start = False
        #: The first load of every aliased version, under way in the background.
        self._initial_load: asyncio.Task[None] | None = None
        self._shutting_down = False

    async def _registry_call(self, fn: Callable[[], T]) -> T:
        return await asyncio.to_thread(fn)

    # -- resolution ------------------------------------------------------------------

    async def resolve(self, model: str, selector: Selector = None) -> VersionInfo:
        """The version a reference points to now; cached for ``resolve_ttl_s``.

        An answer past half its time is renewed ahead, in one background lookup, while
        callers keep getting it: a reference in steady use never expires under them.
        Expiring under load cost every call in flight a registry query of its own in a
        thread at once (sixteen at sixteen connections, each a few ms of the GIL),
        once a second: the p99 of a tiny model at 16 connections was 30 ms against a
        p50 of 6."""
        key = (model, selector)
        while True:
            cached = self._resolved.get(key)
            now = time.monotonic()
            if cached is not None and now - cached[0] < self.resolve_ttl_s:
                if now - cached[0] >= self.resolve_ttl_s / 2 and key not in self._renewing:
                    self._renew(key)
                return cached[1]
            version = await self._look_up(key)
            if version is not None:
                return version

    async def _look_up(self, key: tuple[str, Selector]) -> VersionInfo | None:
        """Ask the registry and cache the answer; ``None`` if an alias moved meanwhile
        (the answer may predate the move: ask again)."""
        model, selector = key
        epoch, now = self._epoch, time.monotonic()
        version = await self._registry_call(lambda: self._registry.get_version(model, selector))
        if self._epoch != epoch:
            return None
        self._resolved[key] = (now, version)
        return version

    def _renew(self, key: tuple[str, Selector]) -> None:
        """Look ``key`` up again in the background, once at a time; a failure (the
        reference gone, the database away) leaves the answer to expire, and the caller
        that then asks gets the error itself."""
        task = asyncio.get_running_loop().create_task(self._look_up(key))
        self._renewing[key] = task
        task.add_done_callback(lambda done: _renewed(self._renewing, key, done))

    def invalidate(self, model: str | None = None) -> None:
        """Forget cached resolutions (of one model, or all) after a registry change."""
        self._epoch += 1
        if model is None:
            self._resolved.clear()
            return
        for key in [k for k in self._resolved if k[0] == model]:
            del self._resolved[key]

    # -- deployments -----------------------------------------------------------------

    async def deployment(self, version: VersionInfo, *, bounded: bool = False) -> Deployment:
        """The loaded deployment of ``version``, loading it on first use; ``bounded``
        (requests) limits how many callers wait for a cold load."""
        key = (version.model, version.version)
        deployment = self._deployments.get(key)
        if (
            deployment is None
            or deployment.is_retired
            or deployment.version.digest != version.digest
        ):
            deployment = self._create(version)
        await deployment.ensure_loaded(bounded=bounded)
        if not deployment.heap_frozen:  # loaded just now: its objects live with it
            deployment.heap_frozen = True
            if not self._loading_at_start:  # those of the start are frozen together
                freeze_long_lived()
        deployment.last_used = time.monotonic()  # a lookup is a use: LRU must not evict it
        await self._evict_past_limit(keep=key)
        return deployment

    async def get(
        self, model: str, selector: Selector = None, *, bounded: bool = False
    ) -> Deployment:
        return await self.deployment(await self.resolve(model, selector), bounded=bounded)

    # -- requests --------------------------------------------------------------------

    def timeout_for(self, requested_s: float | None) -> float:
        """The caller's timeout capped by ``max_request_timeout_s``, or the server's
        default ``request_timeout_s``. A caller asking for more is served with the cap,
        not refused: the 504, if it comes, names both."""
        if requested_s is None:
            return self._settings.request_timeout_s
        return min(requested_s, self._settings.max_request_timeout_s)

    async def predict(
        self,
        model: str,
        selector: Selector,
        inputs: Mapping[str, np.ndarray],
        outputs: Sequence[str] | None = None,
        *,
        timeout_s: float | None = None,
        disconnected: Disconnected | None = None,
        max_tokens: int | None = None,
    ) -> tuple[VersionInfo, dict[str, np.ndarray]]:
        """Run one request on the version ``model:selector`` names now (``max_tokens``:
        for a language model, the most tokens to generate for each text).

        Returns the version that served it with its outputs. Past the timeout the
        request fails with ``RequestTimeout``; if ``disconnected`` completes first (the
        client hung up) it fails with ``ClientDisconnected``; either way its queued
        work is removed from the queue.
        """
        if self._shutting_down:
            raise ShuttingDown(retry_after=1.0)
        # The hang-up is watched where it can save work (hangups.py), not here.
        work = self._predict(model, selector, inputs, outputs, disconnected, max_tokens)
        return await self.bounded(work, timeout_s=timeout_s)

    async def bounded(
        self,
        work: Awaitable[T],
        *,
        timeout_s: float | None = None,
        disconnected: Disconnected | None = None,
    ) -> T:
        """Await ``work`` within the caller's timeout (capped by the server's) unless the
        client hangs up first; either way the work is cancelled."""
        limit = self.timeout_for(timeout_s)
        try:
            async with asyncio.timeout(limit):
                if disconnected is None:
                    return await work
                return await unless_disconnected(work, disconnected)
        except TimeoutError:
            message, details = f"no answer within {limit:g} s", {"timeout_s": limit}
            if timeout_s is not None and timeout_s > limit:
                message += f" (the server's maximum; {timeout_s:g} s was asked)"
                details["requested_timeout_s"] = timeout_s
            raise RequestTimeout(message, details=details) from None

    async def _predict(
        self,
        model: str,
        selector: Selector,
        inputs: Mapping[str, np.ndarray],
        outputs: Sequence[str] | None,
        disconnected: Disconnected | None = None,
        max_tokens: int | None = None,
    ) -> tuple[VersionInfo, dict[str, np.ndarray]]:
        while True:
            deployment = await self.get(model, selector, bounded=True)
            if not deployment.is_retired:
                result = await deployment.predict(
                    inputs, outputs, disconnected=disconnected, max_tokens=max_tokens
                )
                return deployment.version, result
            self.invalidate(model)  # an alias moved between resolving and now

    def begin_shutdown(self) -> None:
        """SIGTERM: readiness turns false and new requests get ``ShuttingDown`` at once;
        calls already running finish. Safe to call from a signal handler."""
        self._shutting_down = True

    @property
    def is_shutting_down(self) -> bool:
        return self._shutting_down

    # -- rollout ---------------------------------------------------------------------

    async def prepare(self, version: VersionInfo) -> None:
        """Load and warm ``version`` before an alias moves to it.

        Raises ``RolloutFailed`` (the caller must then leave the alias where it is)
        when it cannot load. A server that loads lazily (``load_at_start`` off) loads
        the target all the same: an alias must never point at a version that fails.
        """
        try:
            await self.deployment(version)
        except MaasError as exc:
            raise RolloutFailed(
                f"{version.model}:{version.version} failed to load ({exc.code}); "
                "the alias was not moved",
                details={"model": version.model, "version": version.version, "cause": exc.code},
            ) from None

    async def switch(self, model: str) -> None:
        """After an alias of ``model`` moved: route new requests to where aliases point
        now, then drain and unload the versions that no alias needs any more."""
        before = {key for key in self._expected if key[0] == model}
        self.invalidate(model)
        await self.sync_expected()
        for key in before - self._expected:
            deployment = self._deployments.pop(key, None)
            if deployment is not None:
                log.info("unloading %s:%s (no alias points to it)", *key)
                await deployment.unload()

    async def redeploy(self, version: VersionInfo) -> None:
        """Serve ``version`` with its new ``DeploymentSpec``: if it is loaded, build a
        new deployment, warm it, swap it in and drain the old one.

        Idempotent: a version already served with this spec is left alone, so the
        server that made the change and then reads it from the change feed
        (``maas.services.changes``) redeploys once; redeploys of one version run one
        at a time."""
        key = (version.model, version.version)
        self.invalidate(version.model)
        async with self._redeploys.setdefault(key, asyncio.Lock()):
            old = self._deployments.get(key)
            if old is None or not old.is_ready or old.version.deployment == version.deployment:
                return
            new = self._new_deployment(version)
            await new.ensure_loaded()
            self._deployments[key] = new
            await old.unload()

    def _create(self, version: VersionInfo) -> Deployment:
        deployment = self._new_deployment(version)
        self._deployments[(version.model, version.version)] = deployment
        return deployment

    def _new_deployment(self, version: VersionInfo) -> Deployment:
        return Deployment(
            version,
            self._store,
            workers=self._workers,
            options=self._options,
            mode=self._settings.worker_mode,
            generation=self._generation,
            extract_limits=self._extract_limits,
            restart_backoff_s=(
                self._settings.worker_restart_backoff_s,
                self._settings.worker_restart_backoff_max_s,
            ),
            shared=self._shared,
            shared_max_bytes=self._settings.shared_max_bytes,
            cluster=self._cluster,
        )

    def find(self, model: str, version: int) -> Deployment | None:
        return self._deployments.get((model, version))

    async def _evict_past_limit(self, keep: tuple[str, int]) -> None:
        if len(self._deployments) <= self._settings.max_loaded_models:
            return  # the common case, on every call: no more versions known than allowed
        loaded = [d for d in self._deployments.values() if d.state is DeploymentState.READY]
        excess = len(loaded) - self._settings.max_loaded_models
        if excess <= 0:
            return
        candidates = (d for d in loaded if d.key != keep and d.key not in self._expected)
        victims = sorted(candidates, key=lambda d: d.last_used)
        for victim in victims[:excess]:
            log.info("unloading %s:%s (least recently used)", *victim.key)
            self._deployments.pop(victim.key, None)
            await victim.unload(keep_shared=True)  # other servers may call its replicas

    async def unload(self, model: str, version: int | None = None) -> None:
        """Unload one version, or every version of ``model`` (after a delete)."""
        keys = [k for k in self._deployments if k[0] == model and version in (None, k[1])]
        for key in keys:
            await self._deployments.pop(key).unload()
        self._expected -= set(keys)
        self.invalidate(model)

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Read which versions aliases point to, and start loading them in the
        background: a restart answers health and serves each model as soon as it is
        loaded (any other at once, loaded on first use), not after the slowest;
        readiness waits for them all. A version that fails to load is logged, not fatal."""
        versions = await self._expect()
        self._started = True
        self._initial_load = asyncio.create_task(
            self._load_at_start(versions), name="load aliased versions"
        )

    async def _load_at_start(self, versions: list[VersionInfo]) -> None:
        started = time.monotonic()
        self._loading_at_start = True
        try:
            await self._load_all(versions)
        finally:
            self._loading_at_start = False
        # Once this task has ended (the server is ready), not before: a full collection
        # of everything the loads built takes a tenth of a second.
        asyncio.get_running_loop().call_soon(freeze_long_lived)
        # A worker started ahead for these loads (``maas serve``) that none took.
        await asyncio.to_thread(discard_spare_worker)
        if versions:
            log.info(
                "%d aliased versions loaded in %.1f s", len(versions), time.monotonic() - started
            )

    async def wait_loaded(self) -> None:
        """Until the load at start has finished (for callers that need every aliased
        version in memory: benchmarks, tests)."""
        if self._initial_load is not None:
            await asyncio.shield(self._initial_load)

    async def sync_expected(self) -> None:
        """Re-read which versions aliases point to and load those not loaded yet.

        Called after every alias change, so that readiness keeps meaning "everything
        aliases point to is loaded".
        """
        await self._load_all(await self._expect())

    async def _expect(self) -> list[VersionInfo]:
        if not self._settings.load_at_start:
            return []
        versions = await self._registry_call(self._registry.aliased_versions)
        # Known before loading: each load evicts past the limit, and must spare these.
        self._expected = {(v.model, v.version) for v in versions}
        return versions

    async def _load_all(self, versions: list[VersionInfo]) -> None:
        await asyncio.gather(*(self._load_logged(v) for v in versions))

    async def _load_logged(self, version: VersionInfo) -> None:
        try:
            await self.deployment(version)
        except MaasError as exc:
            log.error("could not load %s:%s: %s", version.model, version.version, exc.message)

    def is_ready(self) -> bool:
        """Every version an alias points to is loaded; an empty server with nothing
        expected is ready, one expecting models with none loaded is not."""
        if not self._started or self._shutting_down:
            return False
        if self._initial_load is None or not self._initial_load.done():
            return False
        return not self._pending()

    def loaded(self) -> list[Deployment]:
        return [d for d in self._deployments.values() if d.is_ready]

    def loading(self) -> list[str]:
        """``model:version`` of every aliased version not serving yet (readiness's
        details while it is false)."""
        return sorted(f"{model}:{version}" for model, version in self._pending())

    def _pending(self) -> list[tuple[str, int]]:
        """The aliased versions without a ready deployment."""
        return [
            key
            for key in self._expected
            if (d := self._deployments.get(key)) is None or not d.is_ready
        ]

    async def close(self) -> None:
        """Unload every deployment at once (each drains its own calls first), then stop
        the thread pool; the caller bounds how long this may take. Replicas on a Ray
        cluster stay for the other servers (each removes itself once none pings it)."""
        if self._initial_load is not None and not self._initial_load.done():
            self._initial_load.cancel()
            await asyncio.gather(self._initial_load, return_exceptions=True)
        renewals = list(self._renewing.values())
        for renewal in renewals:
            renewal.cancel()
        await asyncio.gather(*renewals, return_exceptions=True)
        deployments = list(self._deployments.values())
        self._deployments.clear()
        results = await asyncio.gather(
            *(deployment.unload(keep_shared=True) for deployment in deployments),
            return_exceptions=True,
        )
        for deployment, result in zip(deployments, results, strict=True):
            if isinstance(result, Exception):
                log.error("unloading %s:%s failed: %r", *deployment.key, result)
        if self._shared is not None:
            await self._shared.close()
        if self._cluster is not None and self._owns_cluster:
            await asyncio.to_thread(self._cluster.close)
        # Off the loop: a model call still running in the pool must not freeze the loop
        # (and with it the shutdown deadline) while the pool waits for it.
        await asyncio.to_thread(self._workers.close)

    async def cluster_status(self) -> dict[str, Any]:
        """Where this server's models run (``maas cluster status``): the nodes, with what
        each offers and has free, and every loaded deployment's replicas and their nodes.

        Without a cluster the one node is this host and a deployment's replicas are its
        worker processes (or this process, for threads)."""
        if self._cluster is None:
            host = socket.gethostname()
            nodes = [
                {
                    "node_id": host,
                    "address": host,
                    "alive": True,
                    "is_head": True,
                    "resources": {"CPU": float(len(os.sched_getaffinity(0)))},
                    "available": {},
                }
            ]
            backend, address = "local", None
        else:
            found = await asyncio.to_thread(self._cluster.nodes)
            nodes = [dataclasses.asdict(node) for node in found]
            backend, address = "ray", self._cluster.settings.ray_address
        deployments = []
        for deployment in self._deployments.values():
            status = deployment.status()
            replicas = status["replicas"] or [
                {"replica": index, "alive": True, "pid": pid, "node": nodes[0]["node_id"]}
                for index, pid in enumerate(status["pids"] or [os.getpid()])
            ]
            deployments.append(
                {
                    "model": status["model"],
                    "version": status["version"],
                    "state": status["state"],
                    "workers": status["workers"],
                    "replicas": replicas if status["workers"] is not None else [],
                }
            )
        return {"backend": backend, "address": address, "nodes": nodes, "deployments": deployments}

    async def model_exists(self, model: str) -> bool:
        try:
            await self._registry_call(lambda: self._registry.get_model(model))
        except ModelNotFound:
            return False
        return True


def _renewed(renewing: dict[Any, asyncio.Task[Any]], key: Any, done: asyncio.Task[Any]) -> None:
    """A renewal ended: let the next one start; its failure was the answer's to expire."""
    renewing.pop(key, None)
    if not done.cancelled() and done.exception() is not None:
        log.debug("renewing %s failed: %r", key, done.exception())
