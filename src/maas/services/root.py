"""``open_services``: one place that builds, starts and stops the server's parts."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine

from maas.auth.admission import Admission
from maas.auth.audit import AuditLog
from maas.auth.bootstrap import AdminKeyNotice, ensure_admin_key
from maas.auth.keys import KeyHasher, KeyStore
from maas.auth.ratelimit import MemoryRateLimiter, RateLimitBackend, RedisRateLimiter
from maas.auth.resolver import KeyResolver
from maas.auth.usage import UsageLedger
from maas.config import Settings
from maas.jobs.backend import JobBackend, LocalProcessBackend
from maas.jobs.datasets import DatasetService
from maas.jobs.manager import JobManager
from maas.jobs.ray_backend import RayJobBackend
from maas.jobs.store import JobStore
from maas.protocols.gc import StoreName
from maas.protocols.tensors import DecodeLimits
from maas.registry.archives import ExtractLimits
from maas.registry.artifacts import ArtifactStore
from maas.registry.changes import ChangeLog
from maas.registry.db import (
    among_servers,
    create_engine_for,
    session_factory,
    upgrade_to_head,
)
from maas.registry.service import RegistryService
from maas.runtimes.base import ImageLimits
from maas.services.audio import AudioService
from maas.services.changes import ChangeFollower
from maas.services.completions import TextService
from maas.services.demo import register_demo_models
from maas.services.inference import InferenceService
from maas.services.job_results import PublisherSink
from maas.services.orphans import OrphanCollector
from maas.services.publishing import Publisher
from maas.services.rerank import RerankService
from maas.serving.manager import ModelManager
from maas.serving.process_workers import kill_worker_processes
from maas.serving.ray_instances import RayCluster

__all__ = ["Services", "open_collector", "open_services"]

log = logging.getLogger("maas")


@dataclass
class Services:
    settings: Settings
    engine: Engine
    registry: RegistryService
    store: ArtifactStore
    models: ModelManager
    publisher: Publisher
    decode_limits: DecodeLimits
    usage: UsageLedger
    admission: Admission
    keys: KeyStore
    #: API key -> principal, cached a second; shared by every transport.
    principals: KeyResolver
    audit: AuditLog
    admin_key: AdminKeyNotice | None  # None when auth is off
    text: TextService
    datasets: DatasetService
    jobs: JobManager
    #: What every transport calls to run inference (``maas.services.inference``).
    inference: InferenceService
    #: Deletes unreferenced artifacts: ``POST /api/v1/admin/gc`` and a periodic pass.
    orphans: OrphanCollector
    #: Applies what other servers of the database changed (``maas.services.changes``).
    changes: ChangeFollower
    #: The Ray cluster that models and jobs run on, when ``cluster.ray_address`` is set.
    cluster: RayCluster | None = None
    #: ``time.monotonic()`` by which the process must have exited; set by ``begin_drain``.
    drain_deadline: float | None = None
    #: What an operator must know about this server's setup (``/v2/health/ready`` shows
    #: it; empty when there is nothing to say), e.g. rate limits that are not shared.
    health_details: dict[str, Any] = field(default_factory=dict)

    def begin_drain(self, deadline: float) -> None:
        """SIGTERM: readiness and new inference answer 503 from now on, and the teardown
        must end by ``deadline``. Safe to call from a signal handler."""
        self.drain_deadline = deadline
        self.models.begin_shutdown()


@asynccontextmanager
async def open_services(settings: Settings) -> AsyncIterator[Services]:
    """Open the registry (migrating it), the store and the model manager; close on exit."""
    settings.home_dir.mkdir(parents=True, exist_ok=True)
    engine = create_engine_for(settings.resolved_database_url)
    try:  # a start that fails before the services exist must not leak the engine
        services = _assemble(settings, engine)
    except BaseException:
        engine.dispose()
        raise
    try:
        if settings.auth.enabled:
            admin_key = settings.auth.admin_key
            services.admin_key = await asyncio.to_thread(
                ensure_admin_key,
                services.keys,
                settings.home_dir,
                admin_key.get_secret_value() if admin_key else None,
            )
        if settings.demo:
            # Gateways started together on one database register the demo once.
            with among_servers(engine, "demo"):
                await register_demo_models(
                    services.publisher, services.registry, settings.home_dir, settings.demo_models
                )
        await services.changes.start()  # before the models: no change falls in between
        await services.models.start()
        await services.usage.start()
        await services.jobs.start()
        services.orphans.start()
        yield services
    finally:
        await _close(services)


def _stores(settings: Settings) -> tuple[ArtifactStore, ArtifactStore]:
    """The model versions' store and the datasets' (a store of its own beside it)."""
    url = settings.resolved_artifact_url
    return ArtifactStore(url), ArtifactStore(url.rstrip("/") + "/datasets")


def _collector(
    settings: Settings, engine: Engine, store: ArtifactStore, dataset_store: ArtifactStore
) -> OrphanCollector:
    stores: dict[StoreName, ArtifactStore] = {"models": store, "datasets": dataset_store}
    cache = settings.cache_path
    private = cache == settings.home_dir / "cache"  # else maybe shared: see OrphanCollector
    return OrphanCollector(
        engine, session_factory(engine), stores, cache, settings.storage, private_cache=private
    )


def _assemble(settings: Settings, engine: Engine) -> Services:
    """The services over ``engine``, the schema migrated; nothing started yet."""
    upgrade_to_head(engine)
    store, dataset_store = _stores(settings)
    registry = RegistryService(session_factory(engine), store)
    # One connection to the cluster for models and jobs, closed after both (_close).
    cluster = RayCluster(settings.cluster) if settings.cluster.ray_address else None
    job_backend: JobBackend = (
        LocalProcessBackend() if cluster is None else RayJobBackend(cluster, settings.jobs)
    )
    models = ModelManager(
        registry,
        store,
        settings.serving,
        generation=settings.generation,
        cache_dir=settings.cache_path,
        extract_limits=ExtractLimits.from_settings(settings.limits),
        image_limits=ImageLimits(settings.limits.max_image_bytes, settings.limits.max_image_pixels),
        cluster=cluster,
    )
    publisher = Publisher(registry, store, models, settings)
    limits = DecodeLimits.from_settings(settings.limits)
    usage = UsageLedger(session_factory(engine))
    admission = Admission(_rate_limiter(settings), usage, prefix=settings.redis_prefix)
    datasets = DatasetService(
        session_factory(engine),
        dataset_store,
        max_bytes=settings.jobs.max_dataset_bytes,
    )
    jobs = JobManager(
        JobStore(session_factory(engine)),
        datasets,
        registry,
        store,
        PublisherSink(publisher),
        settings.jobs,
        settings.home_dir / "jobs",
        job_backend,
    )
    text = TextService(models, settings.generation)
    keys = _key_store(settings, engine)
    principals = KeyResolver(keys)
    return Services(
        settings,
        engine,
        registry,
        store,
        models,
        publisher,
        limits,
        usage,
        admission,
        keys=keys,
        principals=principals,
        audit=AuditLog(session_factory(engine)),
        admin_key=None,
        text=text,
        datasets=datasets,
        jobs=jobs,
        inference=InferenceService(
            models,
            registry,
            admission,
            text,
            AudioService(models, settings.audio),
            RerankService(text, max_documents=settings.limits.max_rerank_documents),
        ),
        orphans=_collector(settings, engine, store, dataset_store),
        changes=ChangeFollower(
            ChangeLog(session_factory(engine)),
            registry,
            models,
            principals,
            poll_s=settings.serving.changes_poll_s,
            retention_s=settings.serving.changes_retention_s,
        ),
        cluster=cluster,
        health_details=_health_details(settings),
    )


@contextmanager
def open_collector(settings: Settings) -> Iterator[OrphanCollector]:
    """The garbage collector alone, over the database and stores of ``settings``: what
    ``maas gc --local`` runs, with no server (and no model) loaded."""
    engine = create_engine_for(settings.resolved_database_url)
    try:
        upgrade_to_head(engine)
        yield _collector(settings, engine, *_stores(settings))
    finally:
        engine.dispose()


async def _close(services: Services) -> None:
    """Stop every part at once, within the drain deadline (``drain_timeout_s`` from now
    when no SIGTERM set one); past it, worker processes are killed and the rest dropped."""
    deadline = services.drain_deadline
    if deadline is None:
        deadline = time.monotonic() + services.settings.serving.drain_timeout_s
    loop = asyncio.get_running_loop()
    await services.changes.aclose()  # no change applied while the models close
    parts = {
        "gc": services.orphans.aclose(),
        "jobs": services.jobs.close(),  # running jobs stop and are queued again
        "records": _flush_records(services),
        "models": services.models.close(),  # deployments unload concurrently
    }
    try:
        async with asyncio.timeout_at(loop.time() + deadline - time.monotonic()):
            results = await asyncio.gather(*parts.values(), return_exceptions=True)
    except TimeoutError:
        log.error("the shutdown deadline passed: killing worker processes, dropping the rest")
        kill_worker_processes()
    else:
        for name, result in zip(parts, results, strict=True):
            if isinstance(result, Exception):
                log.error("closing %s failed", name, exc_info=result)
        if services.cluster is not None:  # after the models' and jobs' actors are gone
            await asyncio.to_thread(services.cluster.close)
    finally:
        services.engine.dispose()


async def _flush_records(services: Services) -> None:
    await services.admission.aclose()
    await services.usage.aclose()  # after the last request: writes every pending record
    await services.audit.aclose()


def _rate_limiter(settings: Settings) -> RateLimitBackend:
    """Shared limits through Redis when a URL is set, else this process's own."""
    if settings.redis_url:
        return RedisRateLimiter.from_url(settings.redis_url)
    return MemoryRateLimiter()


#: Said at start and in the health details when limits cannot be shared: a second
#: server on the same database would otherwise let every key through twice, silently.
PER_SERVER_LIMITS = (
    "rate limits are per server: the database is shared (PostgreSQL) but MAAS_REDIS_URL "
    "is not set, so each server on it enforces every key's full limit; set MAAS_REDIS_URL "
    "to share them"
)


def _health_details(settings: Settings) -> dict[str, Any]:
    """What ``/v2/health/ready`` adds to its answer, logged once here as a warning."""
    shared_database = settings.resolved_database_url.startswith("postgresql")
    if not shared_database or settings.redis_url:
        return {}
    log.warning(PER_SERVER_LIMITS)
    return {"rate_limits": "per_server", "warnings": [PER_SERVER_LIMITS]}


def _key_store(settings: Settings, engine: Engine) -> KeyStore:
    """Keys hashed under the configured secret, else one kept under ``MAAS_HOME``."""
    secret = settings.auth.hash_secret
    if secret is not None:
        hasher = KeyHasher(secret.get_secret_value().encode())
    else:
        hasher = KeyHasher.from_file(settings.home_dir / "auth.secret")
    return KeyStore(session_factory(engine), hasher)
