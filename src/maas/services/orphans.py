"""``OrphanCollector``: delete the artifacts nothing references any more.

Blobs become orphans when a process dies between storing them and recording what
uses them (a push killed during its inspection, a dataset upload cut before its row),
or when a delete could not finish. They cost disk forever, so this collects them: by
``maas gc`` (the API route, or ``--local`` in the CLI's own process) and by a pass
every ``storage.gc_interval_s`` in the server.

A pass lists both stores (model versions' and datasets'), reads what the database
references (``maas.registry.references``), and deletes a blob only if it is
unreferenced *and* unchanged for ``storage.gc_grace_s``: a push stores its blob before
it inspects and records it, and refreshes the blob's time when the bytes were there
already, so the grace window covers every push in progress. Right before each delete
the references are read again and the time checked again (``ArtifactStore.collect``).
Derived directories in the cache (unpacked archives, dequantized GGUF weights) go with
their blob: those of the blobs a pass deletes and, when the cache is the server's own
(``MAAS_HOME/cache``), those whose blob is no longer in the store (a version deleted,
a crash before its directory went). Cache entries are keyed by content, so a
``MAAS_CACHE_DIR`` set on purpose may be shared with servers of other stores, whose
blobs this store lacks: there only the first kind goes. One pass runs at a time among
every server of the database
(``maas.registry.locks``); a deletion is idempotent, so even racing passes would only
repeat each other.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from maas.config import StorageSettings
from maas.errors import GcInProgress
from maas.observability.metrics import GC_COLLECTED, GC_COLLECTED_BYTES
from maas.protocols.gc import CollectedBlob, CollectedCache, GcReport, SkippedBlob, StoreName
from maas.registry.archives import unpacked_source
from maas.registry.artifacts import ArtifactStore, StoredBlob
from maas.registry.locks import exclusive
from maas.registry.references import digest_referenced, referenced_digests
from maas.runtimes.hf.loading import gguf_cache_source

__all__ = ["OrphanCollector", "gc_lock_name"]

log = logging.getLogger("maas.gc")

#: The cache's derived directories, each named after the blob it was made from.
_DERIVED: tuple[tuple[str, Callable[[str], str | None]], ...] = (
    ("unpacked", unpacked_source),  # registry.archives.unpacked
    ("gguf", gguf_cache_source),  # runtimes.hf.loading.model_dir_for
)
#: What ``unpacked`` and ``model_dir_for`` name a directory while they build it.
_BUILDING = ".tmp-"
#: The first pass waits for the start to settle (models loading), then collects what
#: crashes before this start left, so servers restarted more often than the interval
#: still collect.
_FIRST_PASS_DELAY_S = 60.0


def _tree_bytes(path: Path) -> int:
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except FileNotFoundError:
                continue
    return total


def gc_lock_name(models: ArtifactStore) -> str:
    """The lock a pass holds: one per store, as the servers of one registry share its
    store, and two registries in one PostgreSQL database (schemas) must not block
    each other."""
    return f"maas.gc {models.url}"


class OrphanCollector:
    def __init__(
        self,
        engine: Engine,
        sessions: sessionmaker[Session],
        stores: Mapping[StoreName, ArtifactStore],
        cache_root: Path,
        settings: StorageSettings,
        *,
        private_cache: bool,
    ) -> None:
        self._engine = engine
        self._sessions = sessions
        self._stores = stores
        self._cache_root = cache_root
        self._private_cache = private_cache
        self._settings = settings
        self._periodic: asyncio.Task[None] | None = None

    # -- one pass --------------------------------------------------------------------

    def collect(self, *, dry_run: bool = False, grace_s: float | None = None) -> GcReport:
        """One pass (blocking). Raises ``GcInProgress`` while another pass runs."""
        grace = self._settings.gc_grace_s if grace_s is None else grace_s
        models = self._stores["models"]
        lock_file = models.root / "gc.lock"
        with exclusive(self._engine, gc_lock_name(models), lock_file) as held:
            if not held:
                raise GcInProgress()
            report = self._pass(dry_run, grace)
        if not dry_run:
            self._count(report)
        return report

    def _pass(self, dry_run: bool, grace: float) -> GcReport:
        now = time.time()
        cutoff = now - grace
        listed = [(name, blob) for name, store in self._stores.items() for blob in store.blobs()]
        # Read after the listing: every record made before a blob was listed is seen.
        referenced = referenced_digests(self._sessions)
        candidates: list[tuple[StoreName, StoredBlob]] = []
        skipped: list[SkippedBlob] = []
        young = in_use = 0
        for name, blob in listed:
            if blob.digest in referenced:
                in_use += 1
            elif blob.modified is None:
                reason = "the remote store gives no modification time"
                skipped.append(SkippedBlob(store=name, digest=blob.digest, reason=reason))
            elif blob.modified >= cutoff:
                young += 1
            else:
                candidates.append((name, blob))
        if skipped:  # one line a pass, not one a blob
            log.warning("gc: %d remote blobs not judged: %s", len(skipped), skipped[0].reason)
        collected: list[CollectedBlob] = []
        for name, blob in candidates:
            try:
                size = blob.size_bytes if dry_run else self._delete(name, blob.digest, cutoff)
            except OSError as exc:  # one blob the store refuses to delete stops no other
                reason = f"could not be deleted: {exc.strerror or exc}"
                skipped.append(SkippedBlob(store=name, digest=blob.digest, reason=reason))
                log.error("gc: %s blob %s %s", name, blob.digest, reason)
                continue
            if size is None:
                young += 1  # refreshed or referenced since the listing
                continue
            age = now - (blob.modified or now)
            collected.append(
                CollectedBlob(store=name, digest=blob.digest, size_bytes=size, age_s=age)
            )
        going = {blob.digest for blob in collected if blob.store == "models"}
        caches = self._caches(cutoff, going, dry_run)
        freed = sum(blob.size_bytes for blob in collected) + sum(c.size_bytes for c in caches)
        return GcReport(
            dry_run=dry_run,
            grace_s=grace,
            scanned=len(listed),
            referenced=in_use,
            young=young,
            collected=collected,
            caches=caches,
            skipped=skipped,
            freed_bytes=freed,
        )

    def _delete(self, store: StoreName, digest: str, cutoff: float) -> int | None:
        def in_use(digest: str) -> bool:
            return digest_referenced(self._sessions, digest)

        return self._stores[store].collect(digest, older_than=cutoff, in_use=in_use)

    def _caches(self, cutoff: float, going: set[str], dry_run: bool) -> list[CollectedCache]:
        """Derived directories of the blobs in ``going`` (deleted, or in a dry run to be),
        of blobs gone from the store (a private cache only), and the temp directories
        of builds that died (older than the grace window)."""
        models = self._stores["models"]
        found: list[CollectedCache] = []
        for kind, source_of in _DERIVED:
            folder = self._cache_root / kind
            entries = sorted(folder.iterdir()) if folder.is_dir() else []
            for path in entries:
                if path.name.startswith(_BUILDING):
                    try:
                        stale = path.stat().st_mtime < cutoff
                    except FileNotFoundError:  # renamed into place meanwhile
                        continue
                else:
                    digest = source_of(path.name)
                    stale = digest is not None and (
                        digest in going or (self._private_cache and not models.exists(digest))
                    )
                if not stale or not path.is_dir():
                    continue
                size = _tree_bytes(path)
                if not dry_run and not _remove_tree(path):
                    continue
                found.append(CollectedCache(path=f"{kind}/{path.name}", size_bytes=size))
        return found

    @staticmethod
    def _count(report: GcReport) -> None:
        for blob in report.collected:
            GC_COLLECTED.labels(blob.store).inc()
            GC_COLLECTED_BYTES.labels(blob.store).inc(blob.size_bytes)
        for cache in report.caches:
            GC_COLLECTED.labels("cache").inc()
            GC_COLLECTED_BYTES.labels("cache").inc(cache.size_bytes)
        if report.collected or report.caches:
            log.info(
                "gc: deleted %d unreferenced blobs and %d cache directories, %d bytes",
                len(report.collected),
                len(report.caches),
                report.freed_bytes,
            )

    # -- the server's periodic pass --------------------------------------------------

    def start(self) -> None:
        """Collect every ``gc_interval_s`` (off the event loop) until ``aclose``."""
        interval = self._settings.gc_interval_s
        if interval > 0 and self._periodic is None:
            self._periodic = asyncio.get_running_loop().create_task(self._every(interval))

    async def _every(self, interval: float) -> None:
        delay = min(interval, _FIRST_PASS_DELAY_S)
        while True:
            await asyncio.sleep(delay)
            delay = interval
            try:
                await asyncio.to_thread(self.collect)
            except GcInProgress:
                log.info("gc: another server's pass is running; this one skips its turn")
            except Exception:
                log.exception("gc: the periodic pass failed; it runs again in %.0f s", interval)

    async def aclose(self) -> None:
        """Stop the periodic pass. One running in its thread finishes on its own: every
        step of it is safe to cut (a blob renamed aside is put back by the next pass)."""
        task, self._periodic = self._periodic, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


def _remove_tree(path: Path) -> bool:
    """Rename the directory aside (atomic: a load either finds it whole or not at all),
    then delete it; a crash mid-delete leaves a temp directory the next pass removes."""
    if path.name.startswith(_BUILDING):  # nobody loads from a temp directory
        shutil.rmtree(path, ignore_errors=True)
        return True
    aside = path.with_name(f"{_BUILDING}gc-{path.name}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return False
    except OSError:  # a leftover of the same name: it is stale too
        shutil.rmtree(aside, ignore_errors=True)
        try:
            os.rename(path, aside)
        except OSError:
            return False
    shutil.rmtree(aside, ignore_errors=True)
    return True
