"""``ArtifactStore``: streamed, deduplicated, atomic, verified; local and fsspec."""

from __future__ import annotations

import hashlib
import os
import tracemalloc
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from maas.errors import ArtifactCorrupted, InvalidInput, PayloadTooLarge
from maas.registry.artifacts import ArtifactStore, StoredArtifact

MIB = 1024 * 1024


def files_under(path: Path) -> list[Path]:
    return [p for p in path.rglob("*") if p.is_file()] if path.exists() else []


def store_chunks(store: ArtifactStore, chunks: Iterator[bytes] | list[bytes]) -> StoredArtifact:
    with store.writer() as writer:
        for chunk in chunks:
            writer.write(chunk)
        return writer.commit()


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(str(tmp_path / "artifacts"))


def test_many_chunks_hash_like_the_whole(store: ArtifactStore) -> None:
    chunks = [bytes([i % 256]) * (i + 1) for i in range(2000)]
    whole = b"".join(chunks)
    artifact = store_chunks(store, chunks)
    assert artifact == StoredArtifact(f"sha256:{hashlib.sha256(whole).hexdigest()}", len(whole))
    assert store.local_path(artifact.digest).read_bytes() == whole
    assert store.size(artifact.digest) == len(whole)
    assert files_under(store.tmp_dir) == []


def test_opening_the_store_sweeps_temp_files_a_crash_left_but_not_live_ones(
    store: ArtifactStore,
) -> None:
    """A crash mid-upload leaves its temp file, unlocked; the next start deletes it at
    once, however young, and leaves the files of writes still holding their lock."""
    crashed = store.tmp_dir / "upload-crashed"
    crashed.write_bytes(b"half an upload, written a moment ago")
    writer = store.writer()
    writer.write(b"an upload in progress")

    ArtifactStore(store.url)  # a server starting on the same store

    assert sorted(files_under(store.tmp_dir)) == [writer.path]
    artifact = writer.commit()
    assert store.local_path(artifact.digest).read_bytes() == b"an upload in progress"


def test_a_large_stream_is_never_held_in_memory(store: ArtifactStore) -> None:
    total = 200 * MIB
    block = bytes(range(256)) * 4096  # 1 MiB

    def generate() -> Iterator[bytes]:
        for _ in range(total // len(block)):
            yield block

    tracemalloc.start()
    try:
        artifact = store_chunks(store, generate())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert artifact.size_bytes == total
    assert peak < total // 20  # a few chunks at most, never the whole stream
    assert store.local_path(artifact.digest).stat().st_size == total


def test_same_content_twice_is_stored_once(store: ArtifactStore) -> None:
    first = store_chunks(store, [b"same", b" bytes"])
    second = store_chunks(store, [b"same bytes"])
    assert first == second
    assert len(files_under(store.root / "sha256")) == 1
    assert files_under(store.tmp_dir) == []


def test_an_aborted_writer_leaves_nothing(store: ArtifactStore) -> None:
    with pytest.raises(RuntimeError, match="client went away"), store.writer() as writer:
        writer.write(b"partial upload")
        raise RuntimeError("client went away")
    assert files_under(store.root) == []


def test_max_bytes_is_enforced_and_leaves_nothing(store: ArtifactStore) -> None:
    with pytest.raises(PayloadTooLarge), store.writer(max_bytes=10) as writer:
        writer.write(b"12345")
        writer.write(b"678901")
    assert files_under(store.root) == []


def test_exactly_max_bytes_is_accepted(store: ArtifactStore) -> None:
    with store.writer(max_bytes=10) as writer:
        writer.write(b"1234567890")
        assert writer.commit().size_bytes == 10


def test_an_empty_upload_is_refused(store: ArtifactStore) -> None:
    with pytest.raises(InvalidInput), store.writer() as writer:
        writer.commit()
    assert files_under(store.root) == []


def test_corruption_after_commit_refuses_to_load(store: ArtifactStore) -> None:
    artifact = store_chunks(store, [b"model weights " * 100])
    path = store.local_path(artifact.digest, verify=False)
    data = bytearray(path.read_bytes())
    data[10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactCorrupted) as caught:
        store.local_path(artifact.digest)
    assert caught.value.details["expected"] == artifact.digest


def test_a_missing_file_is_reported_as_corrupted(store: ArtifactStore) -> None:
    artifact = store_chunks(store, [b"abc"])
    store.local_path(artifact.digest).unlink()
    with pytest.raises(ArtifactCorrupted):
        store.local_path(artifact.digest)


@pytest.mark.parametrize(
    "digest",
    [
        "sha256:../../etc",
        "sha256:" + "a" * 63,
        "sha256:" + "a" * 65,
        "sha256:" + "A" * 64,
        "md5:" + "a" * 64,
        "a" * 64,
        "sha256:" + "a" * 62 + "/x",
    ],
)
def test_invalid_digests_are_refused_before_any_path(store: ArtifactStore, digest: str) -> None:
    for call in (store.local_path, store.exists, store.size, store.delete):
        with pytest.raises(InvalidInput):
            call(digest)


def test_delete_removes_the_file(store: ArtifactStore) -> None:
    artifact = store_chunks(store, [b"abc"])
    store.delete(artifact.digest)
    assert not store.exists(artifact.digest)
    store.delete(artifact.digest)  # deleting twice is harmless


def test_put_file(store: ArtifactStore, tmp_path: Path) -> None:
    source = tmp_path / "model.bin"
    source.write_bytes(b"x" * 3 * MIB)
    artifact = store.put_file(source)
    assert store.local_path(artifact.digest).read_bytes() == source.read_bytes()


def test_fsspec_memory_store_round_trip(tmp_path: Path) -> None:
    url = f"memory://maas-unit-{uuid.uuid4().hex}"
    store = ArtifactStore(url, cache_dir=tmp_path / "cache")
    artifact = store_chunks(store, [b"remote ", b"bytes"])
    assert store.exists(artifact.digest)
    assert store.size(artifact.digest) == len(b"remote bytes")
    store.clear_cache()
    assert files_under(tmp_path / "cache" / "sha256") == []
    assert store.local_path(artifact.digest).read_bytes() == b"remote bytes"  # fetched back
    reopened = ArtifactStore(url, cache_dir=tmp_path / "other-cache")
    assert reopened.local_path(artifact.digest).read_bytes() == b"remote bytes"
    store.delete(artifact.digest)
    assert not store.exists(artifact.digest)
    assert not reopened.exists(artifact.digest)


# -- garbage collection: listing, collecting, pushes in progress --------------------------

LONG_AGO = 1_000_000_000.0  # 2001: outside any grace window


def _age(store: ArtifactStore, digest: str) -> None:
    os.utime(store.local_path(digest, verify=False), (LONG_AGO, LONG_AGO))


def _unused(digest: str) -> bool:
    return False


def test_blobs_lists_each_blob_with_its_size_and_time(store: ArtifactStore) -> None:
    first = store_chunks(store, [b"first"])
    second = store_chunks(store, [b"second!"])
    _age(store, first.digest)
    (store.root / "sha256" / "README").write_text("not a blob")  # left alone, not listed
    listed = {blob.digest: blob for blob in store.blobs()}
    assert set(listed) == {first.digest, second.digest}
    assert listed[first.digest].size_bytes == 5 and listed[first.digest].modified == LONG_AGO
    assert listed[second.digest].modified is not None
    assert listed[second.digest].modified > LONG_AGO


def test_a_push_of_bytes_already_stored_makes_them_young_again(store: ArtifactStore) -> None:
    """A dedup push writes nothing, yet a collector must see its blob as in use from now
    until the push records its version: the push refreshes the blob's time."""
    artifact = store_chunks(store, [b"the same bytes"])
    _age(store, artifact.digest)
    assert store_chunks(store, [b"the same bytes"]) == artifact
    (blob,) = store.blobs()
    assert blob.modified is not None and blob.modified > LONG_AGO
    assert store.collect(artifact.digest, older_than=blob.modified, in_use=_unused) is None
    assert store.local_path(artifact.digest).read_bytes() == b"the same bytes"


def test_collect_deletes_an_old_blob_and_keeps_a_young_or_used_one(store: ArtifactStore) -> None:
    old = store_chunks(store, [b"old orphan"])
    used = store_chunks(store, [b"old, used again"])
    young = store_chunks(store, [b"young orphan"])
    _age(store, old.digest)
    _age(store, used.digest)
    cutoff = LONG_AGO + 1

    assert store.collect(young.digest, older_than=cutoff, in_use=_unused) is None
    assert store.collect(used.digest, older_than=cutoff, in_use=lambda d: True) is None
    assert store.collect(old.digest, older_than=cutoff, in_use=_unused) == len(b"old orphan")
    assert store.collect(old.digest, older_than=cutoff, in_use=_unused) is None  # gone already

    assert not store.exists(old.digest)
    assert store.exists(used.digest) and store.exists(young.digest)
    assert sorted(p.name for p in files_under(store.root / "sha256")) == sorted(
        [used.digest[7:], young.digest[7:]]
    )


def test_a_push_that_reuses_a_blob_during_its_collection_keeps_it(store: ArtifactStore) -> None:
    """The push refreshes the blob between the collector's first look and its rename:
    the collector sees the new time on the renamed file and puts the blob back."""
    artifact = store_chunks(store, [b"reused mid-collection"])
    _age(store, artifact.digest)

    def push_meanwhile(digest: str) -> bool:
        store_chunks(store, [b"reused mid-collection"])
        return False

    assert store.collect(artifact.digest, older_than=LONG_AGO + 1, in_use=push_meanwhile) is None
    assert store.local_path(artifact.digest).read_bytes() == b"reused mid-collection"
    assert [p.name for p in files_under(store.root / "sha256")] == [artifact.digest[7:]]


def test_a_blob_a_dead_collector_left_aside_is_put_back(store: ArtifactStore) -> None:
    kept = store_chunks(store, [b"renamed aside, then the collector died"])
    pushed = store_chunks(store, [b"renamed aside, then pushed again"])
    for artifact in (kept, pushed):
        path = store.local_path(artifact.digest)
        path.rename(path.with_name(".gc-" + path.name))
    assert store_chunks(store, [b"renamed aside, then pushed again"]) == pushed  # a new copy

    assert {blob.digest for blob in store.blobs()} == {kept.digest, pushed.digest}
    assert store.local_path(kept.digest).read_bytes() == b"renamed aside, then the collector died"
    assert store.local_path(pushed.digest).read_bytes() == b"renamed aside, then pushed again"
    assert not [p for p in files_under(store.root / "sha256") if p.name.startswith(".gc-")]


def _set_remote_time(store: ArtifactStore, digest: str, when: datetime) -> None:
    """What ``os.utime`` is to a local blob: the memory file system keeps its time as an
    attribute of the stored file."""
    store._fs.store[store._remote(digest)].modified = when


def test_a_remote_store_collects_by_the_remotes_own_time(tmp_path: Path) -> None:
    store = ArtifactStore(f"memory://maas-unit-{uuid.uuid4().hex}", cache_dir=tmp_path / "cache")
    old = store_chunks(store, [b"old remote orphan"])
    young = store_chunks(store, [b"young remote orphan"])
    reused = store_chunks(store, [b"old, pushed again"])
    long_ago = datetime(2001, 9, 9, tzinfo=UTC)
    for artifact in (old, reused):
        _set_remote_time(store, artifact.digest, long_ago)
    store_chunks(store, [b"old, pushed again"])  # a dedup push: uploaded again, young

    listed = {blob.digest: blob.modified for blob in store.blobs()}
    assert listed[old.digest] == long_ago.timestamp()
    cutoff = long_ago.timestamp() + 1
    assert listed[young.digest] > cutoff and listed[reused.digest] > cutoff

    for artifact in (young, reused):
        assert store.collect(artifact.digest, older_than=cutoff, in_use=_unused) is None
    assert store.collect(old.digest, older_than=cutoff, in_use=_unused) == old.size_bytes
    assert not store.exists(old.digest)
    assert not (tmp_path / "cache" / "sha256" / old.digest[7:9] / old.digest[7:]).exists()
    assert store.exists(young.digest) and store.exists(reused.digest)


def _write(store: ArtifactStore, data: bytes) -> StoredArtifact:
    with store.writer() as writer:
        writer.write(data)
        return writer.commit()


def test_a_refused_push_discards_its_blob(store: ArtifactStore) -> None:
    artifact = _write(store, b"refused alone")
    assert store.discard(artifact) and not store.exists(artifact.digest)


def test_a_refused_push_keeps_a_blob_another_push_stored_since(store: ArtifactStore) -> None:
    """Two pushes of the same bytes: the first is refused while the second inspects the
    blob; deleting it then would pull the file from under the second."""
    first = _write(store, b"the same model twice")
    path = store.local_path(first.digest, verify=False)
    old = path.stat().st_mtime_ns - 5_000_000_000
    os.utime(path, ns=(old, old))  # the first push stored it a while ago
    first = StoredArtifact(first.digest, first.size_bytes, old)
    second = _write(store, b"the same model twice")  # refreshes the blob
    assert second.stored_ns is not None and second.stored_ns > old
    assert not store.discard(first) and store.exists(first.digest)
    assert store.discard(second) and not store.exists(first.digest)  # the last one out
