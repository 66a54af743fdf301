"""``OrphanCollector`` over real stores in a temp directory and a real registry (SQLite
and PostgreSQL): what counts as a reference, the grace window, the cache directories,
one pass at a time."""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fsspec
import pytest
from fsspec.implementations.memory import MemoryFileSystem
from prometheus_client import REGISTRY
from sqlalchemy import Engine
from tests.jobs_data import tickets_csv

from maas.config import StorageSettings
from maas.errors import GcInProgress
from maas.jobs.datasets import DatasetService
from maas.jobs.store import JobStore
from maas.protocols.signature import Signature
from maas.registry.artifacts import ArtifactStore, StoredArtifact
from maas.registry.db import session_factory
from maas.registry.locks import exclusive
from maas.registry.service import RegistryService
from maas.services.orphans import OrphanCollector, gc_lock_name

HOUR = 3600.0
#: A modification time far outside any grace window.
LONG_AGO = 1_000_000_000.0


@dataclass
class Install:
    """A server's storage without the server: both stores, the cache, the registry."""

    engine: Engine
    models: ArtifactStore
    datasets: ArtifactStore
    cache: Path
    registry: RegistryService
    dataset_service: DatasetService
    tmp: Path

    def collector(self, grace_s: float = HOUR, *, private_cache: bool = True) -> OrphanCollector:
        stores = {"models": self.models, "datasets": self.datasets}
        settings = StorageSettings(gc_grace_s=grace_s)
        sessions = session_factory(self.engine)
        return OrphanCollector(
            self.engine, sessions, stores, self.cache, settings, private_cache=private_cache
        )

    def version(self, content: bytes, lineage: dict[str, object] | None = None) -> str:
        """A pushed and recorded model version; its digest."""
        artifact = store(self.models, content)
        self.registry.create_version(
            "m",
            artifact=artifact,
            filename="m.onnx",
            framework="onnx",
            signature=Signature(),
            lineage=lineage,
        )
        return artifact.digest

    def dataset(self) -> str:
        path = tickets_csv(self.tmp / "tickets.csv")

        async def chunks() -> AsyncIterator[bytes]:
            yield path.read_bytes()

        info = asyncio.run(self.dataset_service.push("tickets", chunks(), filename=path.name))
        return info.digest


@pytest.fixture
def install(engine: Engine, tmp_path: Path) -> Install:
    models = ArtifactStore(str(tmp_path / "artifacts"))
    datasets = ArtifactStore(str(tmp_path / "artifacts" / "datasets"))
    sessions = session_factory(engine)
    return Install(
        engine,
        models,
        datasets,
        tmp_path / "cache",
        RegistryService(sessions, models),
        DatasetService(sessions, datasets, max_bytes=10 * 1024 * 1024),
        tmp_path,
    )


def store(target: ArtifactStore, content: bytes) -> StoredArtifact:
    with target.writer() as writer:
        writer.write(content)
        return writer.commit()


def orphan(target: ArtifactStore, content: bytes, *, modified: float | None = LONG_AGO) -> str:
    """A blob nothing records, as a crash between the write and the record leaves it."""
    digest = store(target, content).digest
    if modified is not None:
        os.utime(target.local_path(digest, verify=False), (modified, modified))
    return digest


def derived(cache: Path, kind: str, name: str) -> Path:
    """A directory the cache holds for a blob (unpacked archive, converted GGUF)."""
    folder = cache / kind / name
    folder.mkdir(parents=True)
    (folder / "weights.bin").write_bytes(b"w" * 100)
    return folder


def hex_of(digest: str) -> str:
    return digest.removeprefix("sha256:")


def counted(name: str, store_label: str) -> float:
    return REGISTRY.get_sample_value(name, {"store": store_label}) or 0.0


# -- references -----------------------------------------------------------------------


def test_every_kind_of_reference_keeps_its_blob_and_old_orphans_go(install: Install) -> None:
    lineage_only = orphan(install.datasets, b"a dataset only a lineage names")
    spec_only = orphan(install.datasets, b"a dataset only a queued job names")
    result_only = orphan(install.datasets, b"a dataset only a job result names")
    version = install.version(b"model v1", lineage={"dataset": {"digest": lineage_only}})
    os.utime(install.models.local_path(version, verify=False), (LONG_AGO, LONG_AGO))
    dataset = install.dataset()
    os.utime(install.datasets.local_path(dataset, verify=False), (LONG_AGO, LONG_AGO))
    jobs = JobStore(session_factory(install.engine))
    jobs.create("job1", "evaluate", "m", {"dataset": f"tickets@{spec_only}"}, None)
    jobs.create("job2", "evaluate", "m", {"dataset": "tickets"}, None)
    jobs.finish(
        "job2", "succeeded", from_states=("queued",), result={"evaluation": {"digest": result_only}}
    )
    lost_model = orphan(install.models, b"a push killed during its inspection")
    lost_dataset = orphan(install.datasets, b"a dataset upload cut before its row")

    report = install.collector().collect()

    gone = {(blob.store, blob.digest) for blob in report.collected}
    assert gone == {("models", lost_model), ("datasets", lost_dataset)}
    assert report.referenced == 5 and report.young == 0 and report.skipped == []
    assert report.freed_bytes == len(b"a push killed during its inspection") + len(
        b"a dataset upload cut before its row"
    )
    assert not install.models.exists(lost_model) and not install.datasets.exists(lost_dataset)
    for digest in (lineage_only, spec_only, result_only, dataset):
        assert install.datasets.local_path(digest).is_file()  # still whole: verified
    assert install.models.local_path(version).is_file()


def test_a_dry_run_lists_what_would_go_and_deletes_nothing(install: Install) -> None:
    lost = orphan(install.models, b"orphan bytes")
    unpacked = derived(install.cache, "unpacked", hex_of(lost))

    report = install.collector().collect(dry_run=True)

    assert report.dry_run
    assert [(b.store, b.digest, b.size_bytes) for b in report.collected] == [
        ("models", lost, len(b"orphan bytes"))
    ]
    assert [c.path for c in report.caches] == [f"unpacked/{hex_of(lost)}"]
    assert report.freed_bytes == len(b"orphan bytes") + 100
    assert install.models.exists(lost) and unpacked.is_dir()


def test_a_second_pass_finds_nothing(install: Install) -> None:
    orphan(install.models, b"orphan bytes")
    install.collector().collect()
    again = install.collector().collect()
    assert again.collected == [] and again.caches == [] and again.freed_bytes == 0


def test_collected_blobs_and_bytes_are_counted_in_the_metrics(install: Install) -> None:
    before = counted("maas_gc_collected_total", "models")
    bytes_before = counted("maas_gc_collected_bytes_total", "models")
    orphan(install.models, b"12345")
    install.collector().collect(dry_run=True)
    assert counted("maas_gc_collected_total", "models") == before  # a dry run counts nothing
    install.collector().collect()
    assert counted("maas_gc_collected_total", "models") == before + 1
    assert counted("maas_gc_collected_bytes_total", "models") == bytes_before + 5


# -- the grace window: pushes in progress ---------------------------------------------


def test_a_blob_written_by_a_push_still_inspecting_is_kept(install: Install) -> None:
    """A push stores its blob, then inspects it (minutes for a large model), then
    records it: meanwhile nothing references the blob, and it must stay."""
    inspecting = orphan(install.models, b"a large model being inspected", modified=None)

    report = install.collector().collect()

    assert report.collected == [] and report.young == 1
    assert install.models.local_path(inspecting).is_file()
    install.registry.create_version(  # the push ends: its version finds its bytes
        "m",
        artifact=StoredArtifact(inspecting, len(b"a large model being inspected")),
        filename="m.onnx",
        framework="onnx",
        signature=Signature(),
    )


def test_a_push_of_bytes_the_store_holds_saves_them_from_a_pass(install: Install) -> None:
    """An old orphan pushed again (a dedup push) is young again at once, before its
    inspection and record: the pass that runs meanwhile keeps it."""
    content = b"pushed, orphaned by a crash, pushed again"
    digest = orphan(install.models, content)
    assert store(install.models, content).digest == digest  # the dedup push's write

    report = install.collector().collect()

    assert report.collected == [] and report.young == 1
    assert install.models.local_path(digest).read_bytes() == content


def test_grace_can_be_overridden_for_one_pass(install: Install) -> None:
    young = orphan(install.models, b"just written", modified=None)
    assert install.collector().collect().collected == []
    report = install.collector().collect(grace_s=0)
    assert [b.digest for b in report.collected] == [young] and report.grace_s == 0


# -- cache directories --------------------------------------------------------------------


def test_derived_directories_go_with_their_blob_and_stay_with_a_live_one(
    install: Install,
) -> None:
    kept = install.version(b"an archive a version uses")
    lost = orphan(install.models, b"an archive nobody uses")
    keep_unpacked = derived(install.cache, "unpacked", hex_of(kept))
    keep_gguf = derived(install.cache, "gguf", hex_of(kept)[:2] + hex_of(kept))
    lost_unpacked = derived(install.cache, "unpacked", hex_of(lost))
    lost_gguf = derived(install.cache, "gguf", hex_of(lost)[:2] + hex_of(lost))
    never_stored = derived(install.cache, "unpacked", hashlib.sha256(b"gone").hexdigest())
    dead_build = derived(install.cache, "unpacked", ".tmp-died")
    os.utime(dead_build, (LONG_AGO, LONG_AGO))
    live_build = derived(install.cache, "unpacked", ".tmp-extracting")
    by_path = derived(install.cache, "gguf", "f" * 64)  # a GGUF cached from a path

    report = install.collector().collect()

    assert sorted(c.path for c in report.caches) == sorted(
        [
            f"unpacked/{lost_unpacked.name}",
            f"gguf/{lost_gguf.name}",
            f"unpacked/{never_stored.name}",
            "unpacked/.tmp-died",
        ]
    )
    assert all(c.size_bytes == 100 for c in report.caches)
    for path in (lost_unpacked, lost_gguf, never_stored, dead_build):
        assert not path.exists(), path
    for path in (keep_unpacked, keep_gguf, live_build, by_path):
        assert (path / "weights.bin").is_file(), path
    assert [p.name for p in (install.cache / "unpacked").iterdir() if "gc-" in p.name] == []


def test_a_shared_cache_loses_only_the_directories_of_blobs_the_pass_deleted(
    install: Install,
) -> None:
    """A cache set with MAAS_CACHE_DIR may serve servers of other stores too: a
    directory whose blob this store never had may be theirs."""
    lost = orphan(install.models, b"an archive nobody uses")
    lost_unpacked = derived(install.cache, "unpacked", hex_of(lost))
    theirs = hashlib.sha256(b"a GGUF file of another store").hexdigest()
    others = derived(install.cache, "gguf", theirs[:2] + theirs)

    report = install.collector(private_cache=False).collect()

    assert [c.path for c in report.caches] == [f"unpacked/{hex_of(lost)}"]
    assert not lost_unpacked.exists() and (others / "weights.bin").is_file()


# -- one pass at a time ---------------------------------------------------------------------


def test_a_second_pass_while_one_runs_is_refused(install: Install) -> None:
    lost = orphan(install.models, b"orphan bytes")
    lock_file = install.models.root / "gc.lock"
    with exclusive(install.engine, gc_lock_name(install.models), lock_file) as held:
        assert held
        with pytest.raises(GcInProgress) as caught:
            install.collector().collect()
    assert caught.value.status == 409
    assert install.models.exists(lost)
    assert [b.digest for b in install.collector().collect().collected] == [lost]


def test_a_pass_over_another_store_of_the_same_database_is_not_blocked(
    install: Install,
) -> None:
    """One pass at a time per store: a registry whose store is elsewhere (another
    schema of the same PostgreSQL database, say) collects while this one's pass runs."""
    other = ArtifactStore(str(install.tmp / "elsewhere"))
    lost = orphan(other, b"orphan elsewhere")
    lock_file = install.models.root / "gc.lock"
    with exclusive(install.engine, gc_lock_name(install.models), lock_file) as held:
        assert held
        collector = OrphanCollector(
            install.engine,
            session_factory(install.engine),
            {"models": other, "datasets": install.datasets},
            install.cache,
            StorageSettings(gc_grace_s=HOUR),
            private_cache=True,
        )
        assert [b.digest for b in collector.collect().collected] == [lost]


# -- remote stores ------------------------------------------------------------------------


class _TimelessMemory(MemoryFileSystem):
    """An fsspec file system that gives no modification time (as ftp or plain http do)."""

    protocol = "timeless"

    @classmethod
    def _strip_protocol(cls, path: Any) -> Any:
        return super()._strip_protocol(str(path).removeprefix("timeless://"))

    def modified(self, path: str) -> Any:
        raise NotImplementedError


def _remote_install(engine: Engine, tmp_path: Path, protocol: str) -> Install:
    root = f"{protocol}://maas-unit-{uuid.uuid4().hex}"
    models = ArtifactStore(root, cache_dir=tmp_path / "artifact-cache")
    datasets = ArtifactStore(f"{root}/datasets", cache_dir=tmp_path / "artifact-cache")
    sessions = session_factory(engine)
    registry = RegistryService(sessions, models)
    dataset_service = DatasetService(sessions, datasets, max_bytes=1024 * 1024)
    return Install(
        engine, models, datasets, tmp_path / "cache", registry, dataset_service, tmp_path
    )


def test_a_remote_pass_goes_by_the_remotes_time(engine: Engine, tmp_path: Path) -> None:
    install = _remote_install(engine, tmp_path, "memory")
    used = install.version(b"a version on the object store")
    lost = store(install.models, b"an orphan on the object store").digest
    young = store(install.datasets, b"a dataset upload being parsed").digest
    long_ago = datetime(2001, 9, 9, tzinfo=UTC)
    for target, digest in ((install.models, used), (install.models, lost)):
        assert target._fs is not None
        target._fs.store[target._remote(digest)].modified = long_ago

    report = install.collector().collect()

    assert [(b.store, b.digest) for b in report.collected] == [("models", lost)]
    assert (report.referenced, report.young, report.skipped) == (1, 1, [])
    assert not install.models.exists(lost)
    assert install.models.exists(used) and install.datasets.exists(young)


def test_a_remote_without_times_is_skipped_and_said(engine: Engine, tmp_path: Path) -> None:
    fsspec.register_implementation("timeless", _TimelessMemory, clobber=True)
    install = _remote_install(engine, tmp_path, "timeless")
    lost = store(install.models, b"an orphan of unknown age").digest

    report = install.collector().collect(grace_s=0)

    assert report.collected == []
    assert [(s.store, s.digest) for s in report.skipped] == [("models", lost)]
    assert "modification time" in report.skipped[0].reason
    assert install.models.exists(lost)
