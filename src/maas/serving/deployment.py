"""One served model version: its instances, its batcher, its state and the calls to it."""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from maas.config import GenerationSettings
from maas.errors import (
    InvalidRequest,
    MaasError,
    ModelNotReady,
    Overloaded,
    RuntimeFailure,
    WorkerCrashed,
)
from maas.observability.metrics import LOAD_SECONDS, LOADED_MODELS
from maas.protocols.management import VersionInfo
from maas.protocols.signature import Signature
from maas.protocols.tensors import DATATYPES
from maas.registry.archives import DEFAULT_EXTRACT_LIMITS, ExtractLimits
from maas.registry.artifacts import ArtifactStore
from maas.runtimes.base import LoadOptions, check_request, texts_of
from maas.runtimes.catalog import load_runtime, runtime_class
from maas.runtimes.generation import TextGenerator
from maas.serving.batching import DynamicBatcher
from maas.serving.generation import GenerationScheduler
from maas.serving.hangups import Disconnected, unless_disconnected
from maas.serving.local_artifacts import local_artifact
from maas.serving.process_workers import (
    LoadTarget,
    ProcessInstances,
    ProcessPool,
    SharedInstances,
)
from maas.serving.ray_generation import RayGeneration
from maas.serving.ray_instances import RayCluster, RayInstances, ReplicaTarget
from maas.serving.text_requests import LocalEngine, TextEngine, constrains
from maas.serving.workers import InlineInstances, ModelInstances, ThreadInstances, Workers

__all__ = ["Deployment", "DeploymentState", "warmup_inputs"]

log = logging.getLogger("maas.serving")


class DeploymentState(enum.Enum):
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"
    UNLOADED = "unloaded"


def warmup_inputs(signature: Signature) -> dict[str, np.ndarray]:
    """A zero-filled batch of one row shaped by the signature (any-size dims become 1)."""
    inputs = {}
    for spec in signature.inputs:
        shape = [1 if dim < 0 else dim for dim in spec.shape]
        if spec.datatype == "BYTES":
            inputs[spec.name] = np.full(shape, b"", dtype=object)
        else:
            inputs[spec.name] = np.zeros(shape, dtype=DATATYPES[spec.datatype])
    return inputs


def _size_of(path: Path) -> int:
    """Bytes of an artifact: a file, or a directory unpacked from an archive."""
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


class Deployment:
    """A model version that is, or is becoming, ready to answer.

    Loading happens once, off the event loop: concurrent first requests all await the
    same load, which ends with one warm-up call so the first real caller does not pay
    for lazy initialisation. A failed load is remembered with its error so that callers
    get the reason, and the next call after ``retry_after_s`` tries again. Once
    unloaded a deployment never loads again: the manager builds a new one, so a
    request that still holds this object cannot resurrect a retired version.
    """

    retry_after_s = 5.0

    def __init__(
        self,
        version: VersionInfo,
        store: ArtifactStore,
        *,
        workers: Workers,
        options: LoadOptions,
        mode: str = "auto",
        generation: GenerationSettings | None = None,
        extract_limits: ExtractLimits = DEFAULT_EXTRACT_LIMITS,
        restart_backoff_s: tuple[float, float] = (0.1, 10.0),
        shared: ProcessPool | None = None,
        shared_max_bytes: int = 0,
        cluster: RayCluster | None = None,
    ) -> None:
        self.version = version
        self._store = store
        #: What unpacking a model directory may write: the operator's, as at push time.
        self._extract_limits = extract_limits
        self._workers = workers
        #: The server's load options plus what this version's deployment asks, and its
        #: signature (a TorchScript file's is declared at push, not in the file).
        self._options = replace(
            options, quantize=version.deployment.quantize, signature=version.signature
        )
        self._mode = mode
        #: First and longest delay before a dead worker process is restarted.
        self._restart_backoff_s = restart_backoff_s
        #: The server's pool of workers that small models share, if it has one.
        self._shared = shared
        self._shared_max_bytes = shared_max_bytes
        #: The Ray cluster that holds the replicas of models, if the server has one.
        self._cluster = cluster
        self._generation_settings = generation or GenerationSettings()
        #: A language model's engine (its continuous-batching scheduler, here or on its
        #: replicas); ``None`` for other models.
        self.generation: TextEngine | None = None
        self._instances: ModelInstances | None = None
        self._batcher: DynamicBatcher | None = None
        self._load_task: asyncio.Task[None] | None = None
        self._failed_at = 0.0
        self._load_waiters = 0
        self._retired = False
        self._keep_shared = False
        self.state = DeploymentState.UNLOADED
        self.error: MaasError | None = None
        self.load_seconds: float | None = None
        #: Whether the objects its load built were frozen (``maas.serving.heap``).
        self.heap_frozen = False
        self.last_used = time.monotonic()
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def is_ready(self) -> bool:
        """Loaded, not retired, and with at least one live instance."""
        return (
            self.state is DeploymentState.READY
            and self._instances is not None
            and self._instances.is_alive
        )

    def _loaded(self) -> bool:
        return self.state is DeploymentState.READY

    @property
    def is_retired(self) -> bool:
        return self._retired

    @property
    def key(self) -> tuple[str, int]:
        return (self.version.model, self.version.version)

    @property
    def _labels(self) -> tuple[str, str]:
        return (self.version.model, str(self.version.version))

    async def ensure_loaded(self, *, bounded: bool = False) -> None:
        """Load the version unless it is loaded (concurrent callers share one load).

        With ``bounded`` (a request, not the manager's own loads), at most
        ``max_queue_size`` callers wait for a cold load: past that, ``Overloaded`` at
        once, as the queue they would join anyway would refuse them.
        """
        if self.state is DeploymentState.READY:
            return
        if self._retired:
            raise ModelNotReady("this version was unloaded", retry_after=1.0)
        if self.state is DeploymentState.FAILED:
            if time.monotonic() - self._failed_at < self.retry_after_s:
                assert self.error is not None
                raise self.error
            self._load_task = None
        limit = self.version.deployment.max_queue_size
        if bounded and self._load_waiters >= limit:
            raise Overloaded(
                f"{limit} requests already wait for {self._label} to load", retry_after=1.0
            )
        if self._load_task is None:
            self._load_task = asyncio.ensure_future(self._load())
        self._load_waiters += 1
        try:
            await asyncio.shield(self._load_task)
        finally:
            self._load_waiters -= 1
        if not self._loaded():  # the load failed, or an unload came meanwhile
            raise self.error or ModelNotReady()

    async def _load(self) -> None:
        self.state = DeploymentState.LOADING
        started = time.monotonic()
        instances: ModelInstances | None = None
        scheduler: TextEngine | None = None
        try:
            instances = await self._start_instances()
            scheduler = self._scheduler_for(instances)
            await self._warm(instances, scheduler)
        except Exception as exc:
            if scheduler is not None:
                await scheduler.close()
            if instances is not None:
                await instances.close()
            if isinstance(exc, MaasError):
                self._fail(exc)
            else:  # a framework error while loading is the server's problem
                log.exception("loading %s failed", self._label)
                self._fail(RuntimeFailure(f"loading {self._label} failed: {type(exc).__name__}"))
            return
        if self._retired:  # unloaded while loading
            if scheduler is not None:
                await scheduler.close()
            await self._let_go(instances)
            return
        self._instances = instances
        self.generation = scheduler
        spec = self.version.deployment
        self._batcher = DynamicBatcher(
            instances.predict,
            self.version.signature,
            spec,
            labels=self._labels,
            concurrency=instances.capacity,
        )
        self.load_seconds = time.monotonic() - started
        LOAD_SECONDS.labels(*self._labels).observe(self.load_seconds)
        LOADED_MODELS.labels(*self._labels).inc()
        self.state = DeploymentState.READY

    def _placement(self, path: Path) -> str:
        """``threads``, ``inline`` (on the event loop), ``processes`` (its own) or
        ``shared`` (the server's pool)."""
        runtime = runtime_class(self.version.framework)
        if runtime.in_process_only:  # language models: their schedulers drive them
            return "threads"
        mode: str = self.version.deployment.workers
        if mode == "auto":
            mode = self._mode  # the server's default
        if mode != "auto":
            return "processes" if mode == "shared" and self._shared is None else mode
        if runtime.releases_gil:
            return "threads"
        if (
            self._shared is not None
            and self.version.deployment.instances == 1
            and _size_of(path) <= self._shared_max_bytes
        ):
            return "shared"
        return "processes"

    def _scheduler_for(self, instances: ModelInstances) -> TextEngine | None:
        """A language model gets an engine that batches its sequences: a scheduler in
        this process, or its replicas' own on a cluster."""
        if isinstance(instances, RayGeneration):
            return instances
        runtime = getattr(instances, "runtime", None)
        if not isinstance(runtime, TextGenerator):
            return None
        scheduler = GenerationScheduler.for_deployment(
            runtime,
            self._generation_settings,
            model=self.version.model,
            version=str(self.version.version),
        )
        return LocalEngine(scheduler)

    def _generates(self) -> bool:
        """A language model: llama.cpp's always, transformers' by its recorded task."""
        runtime = runtime_class(self.version.framework)
        if getattr(runtime, "generates", False):
            return True
        return self.version.metadata.get("task") == "text-generation"

    def _on_cluster(self) -> bool:
        """A Ray cluster holds every model but versions whose spec pins a local
        placement and the other runtimes that must run in this process (transformers'
        embedders and classifiers). A language model runs there with its scheduler."""
        if self._cluster is None or self.version.deployment.workers != "auto":
            return False
        return self._generates() or not runtime_class(self.version.framework).in_process_only

    async def _start_on_cluster(self) -> RayInstances:
        assert self._cluster is not None
        spec = self.version.deployment
        options = self._options
        if self._generates():  # llama.cpp's threads spin: one per CPU the replica holds
            options = replace(options, threads=max(1, int(spec.cpus)))
        target = ReplicaTarget(
            self.version.framework,
            self._store.shared_url,
            self.version.digest,
            options,
            self._extract_limits,
        )
        if self._generates():
            engine = RayGeneration(
                self._cluster,
                target,
                spec.instances,
                settings=self._generation_settings,
                constrains=constrains(runtime_class(self.version.framework)),
                cpus=spec.cpus,
                memory_bytes=self._replica_memory(),
                labels=self._labels,
            )
            await engine.start()
            return engine
        instances = RayInstances(
            self._cluster,
            target,
            spec.instances,
            cpus=spec.cpus,
            memory_bytes=self._replica_memory(),
            labels=self._labels,
        )
        await instances.start()
        return instances

    def _replica_memory(self) -> int:
        """What each replica asks of a node's memory: the deployment's ``memory_bytes``,
        else an estimate from the artifact (loaded, a model takes about its file's size
        again beside the file's pages) over what a Ray worker process costs bare, so a
        node fills up by memory rather than by replica count."""
        asked = self.version.deployment.memory_bytes
        if asked is not None:
            return asked
        assert self._cluster is not None
        base = self._cluster.settings.replica_base_memory_bytes
        return base + 2 * self.version.size_bytes

    async def _start_instances(self) -> ModelInstances:
        if self._on_cluster():
            return await self._start_on_cluster()
        digest = self.version.digest
        path = await self._workers.run(lambda: self._local_artifact(digest))
        framework, options = self.version.framework, self._options
        placement = self._placement(path)
        if placement == "shared":
            assert self._shared is not None
            shared = SharedInstances(self._shared, LoadTarget(framework, path, options))
            await shared.start()
            return shared
        if placement == "processes":
            initial_s, max_s = self._restart_backoff_s
            own = ProcessPool(
                self.version.deployment.instances,
                labels=self._labels,
                backoff_initial_s=initial_s,
                backoff_max_s=max_s,
            )
            instances = ProcessInstances(own, LoadTarget(framework, path, options))
            await instances.start()
            return instances
        runtime = await self._workers.run(lambda: load_runtime(framework, path, options))
        in_threads = InlineInstances if placement == "inline" else ThreadInstances
        return in_threads(runtime, self._workers, self.version.deployment.instances)

    def _local_artifact(self, digest: str) -> Path:
        return local_artifact(self._store, digest, self._options.cache_dir, self._extract_limits)

    async def _warm(self, instances: ModelInstances, scheduler: TextEngine | None) -> None:
        """One call on zeros: lazy initialisation happens now, not on a caller's time."""
        if scheduler is not None:  # one token through the scheduler warms the model
            await scheduler.warm()
            return
        signature = self.version.signature
        if not signature.inputs:
            return
        inputs, outputs = check_request(signature, warmup_inputs(signature), None)
        try:
            await instances.predict(inputs, outputs)
        except InvalidRequest as exc:  # the model refuses zeros; it loaded all the same
            log.info("warm-up of %s skipped: %s", self._label, exc.message)

    def _fail(self, error: MaasError) -> None:
        self.error = error
        self._failed_at = time.monotonic()
        self.state = DeploymentState.FAILED

    @property
    def _label(self) -> str:
        return f"{self.version.model}:{self.version.version}"

    async def predict(
        self,
        inputs: Mapping[str, np.ndarray],
        outputs: Sequence[str] | None,
        *,
        disconnected: Disconnected | None = None,
        max_tokens: int | None = None,
    ) -> dict[str, np.ndarray]:
        """Queue one request on this version and return its outputs (a language model
        generates up to ``max_tokens`` for each text, else ``default_max_tokens``).

        Counted in flight before its first suspension, so an unload that starts after
        this call began waits for it. ``disconnected`` completes if the caller hangs up:
        its queued work then leaves the queue, its sequences stop generating.
        """
        self.in_flight += 1
        self._idle.clear()
        try:
            await self.ensure_loaded()
            batcher, instances = self._batcher, self._instances
            if batcher is None or instances is None or self.state is not DeploymentState.READY:
                raise ModelNotReady(retry_after=1.0)
            if not instances.is_alive:
                raise WorkerCrashed("no live worker for this model; restarting", retry_after=1.0)
            self.last_used = time.monotonic()
            if self.generation is not None:
                work = self._generate(inputs, outputs, max_tokens)
                if disconnected is None:
                    return await work
                return await unless_disconnected(work, disconnected)
            return await batcher.submit(inputs, outputs, disconnected=disconnected)
        finally:
            self.in_flight -= 1
            if not self.in_flight:
                self._idle.set()

    async def _generate(
        self,
        inputs: Mapping[str, np.ndarray],
        outputs: Sequence[str] | None,
        max_tokens: int | None,
    ) -> dict[str, np.ndarray]:
        """V2 infer on a language model: greedy completions, batched with every other
        sequence of the model."""
        assert self.generation is not None
        checked, _ = check_request(self.version.signature, inputs, outputs)
        texts = texts_of(checked["text"])
        budget = max_tokens or self._generation_settings.default_max_tokens
        completions = await self.generation.complete_texts(texts, max_tokens=budget)
        return {"text": np.array([c.text.encode() for c in completions], dtype=object)}

    def status(self) -> dict[str, Any]:
        """What the deployment status endpoint shows."""
        instances = self._instances
        return {
            "model": self.version.model,
            "version": self.version.version,
            "state": self.state.value,
            "ready": self.is_ready,
            "workers": instances.kind if instances is not None else None,
            "instances": self.version.deployment.instances,
            "pids": instances.pids if instances is not None else [],
            "nodes": getattr(instances, "nodes", []),
            "replicas": getattr(instances, "replicas", []),
            "queue_depth": self._batcher.queue_depth if self._batcher is not None else 0,
            "in_flight": self.in_flight,
            "spec": self.version.deployment.model_dump(),
            "error": self.error.code if self.error is not None else None,
        }

    async def _let_go(self, instances: ModelInstances) -> None:
        """Close ``instances`` as the retirement asked: replicas on a Ray cluster that
        other servers may use are only let go of after a shutdown or an eviction
        (``keep_shared``), even when the load they came from ended after it."""
        if isinstance(instances, RayInstances) and self._keep_shared:
            await instances.detach()
        else:
            await instances.close()

    async def unload(self, *, keep_shared: bool = False) -> None:
        """Retire the version: new calls are refused, in-flight ones finish, then close.

        ``keep_shared``: replicas on a Ray cluster, which other servers may use, are let
        go of rather than removed (a shutdown, an eviction); they remove themselves
        once no server pings them. Without it (the registry retired the version) they
        are removed."""
        was_ready = self.state is DeploymentState.READY
        self._retired = True
        self._keep_shared = keep_shared  # also for a load still running: it ends here
        self.state = DeploymentState.UNLOADED
        self._load_task = None
        await self._idle.wait()
        batcher, self._batcher = self._batcher, None
        instances, self._instances = self._instances, None
        scheduler, self.generation = self.generation, None
        if scheduler is not None:
            await scheduler.close()
        if batcher is not None:
            await batcher.close()
        if instances is not None:
            await self._let_go(instances)
        if was_ready:
            LOADED_MODELS.labels(*self._labels).dec()
