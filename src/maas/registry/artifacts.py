"""Content-addressed artifact store: files named by their sha256, written atomically.

A local directory by default; any fsspec URL (``s3://…``, ``memory://``) for shared
installs, with a local, verified cache for loading. Writes go to a temp file that is
fsynced and renamed into place, so a crash never leaves a partial file under a digest.
Reads are verified against the digest (once per file state), so a corrupted artifact
refuses to load instead of serving wrong answers. A crash mid-write leaves its temp
file behind; opening the store (every start) deletes the temp files no live write
holds. Each write holds an exclusive ``flock`` on its temp file until the file is
renamed into place, and the kernel drops the lock when its process dies (kill -9
included), so "unlocked" means "abandoned", whatever the file's age, while another
process's upload in progress is never touched.

Blobs nothing references any more (a crash between a write and its registry record)
are deleted by the garbage collector (``maas.services.orphans``) through ``blobs`` and
``collect``. A blob may be unreferenced for a while legitimately: a push writes it,
then inspects it, and only then records it. So the collector spares blobs modified
within its grace window, and every push refreshes that time, a push of bytes the store
already holds included (``_adopt``). ``collect`` first renames the blob aside, then
checks its time again: a push that refreshed it before the rename is seen and the blob
put back, one that comes after finds no blob and stores its own copy.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from maas.errors import ArtifactCorrupted, InvalidInput, PayloadTooLarge, StorageFailure

__all__ = ["ArtifactStore", "ArtifactWriter", "StoredArtifact", "StoredBlob"]

log = logging.getLogger("maas.registry")

_DIGEST = re.compile(r"sha256:([0-9a-f]{64})")
_HEX = re.compile(r"[0-9a-f]{64}")
#: Prefix of a blob the collector has renamed aside while it makes sure of it.
_ASIDE = ".gc-"
_READ_CHUNK = 1024 * 1024


@dataclass(frozen=True, slots=True)
class StoredArtifact:
    digest: str
    size_bytes: int
    #: The blob's modification time (ns) right after this write stored or refreshed it:
    #: a later time means another push has stored the same bytes since.
    stored_ns: int | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class StoredBlob:
    """A blob as the garbage collector sees it: ``modified`` is seconds since the epoch,
    ``None`` when a remote store cannot say (such a blob is never collected)."""

    digest: str
    size_bytes: int
    modified: float | None


def _hex_of(digest: str) -> str:
    """The hex part of a valid digest; anything else is refused before a path is built."""
    match = _DIGEST.fullmatch(digest)
    if match is None:
        raise InvalidInput(f"not a sha256 digest: {digest[:80]!r}")
    return match.group(1)


def _hash_file(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_READ_CHUNK):
            sha.update(chunk)
    return f"sha256:{sha.hexdigest()}"


def _mtime_ns(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _put_back(aside: Path, final: Path) -> None:
    """Undo a collector's rename: the blob is in use after all (or the collector died)."""
    try:
        os.link(aside, final)
    except FileExistsError:  # a push stored the same bytes again meanwhile
        pass
    except FileNotFoundError:  # already put back, by another pass
        return
    except OSError:  # a file system without hard links
        if not final.exists():
            os.replace(aside, final)
            return
    aside.unlink(missing_ok=True)


def _remove_if_abandoned(path: str) -> bool:
    """Delete a temp file unless a live write holds its lock; True if deleted."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:  # committed or swept by another process meanwhile
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # a write in progress, in this or another process
            return False
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
            return True
        return False
    finally:
        os.close(fd)


class ArtifactWriter:
    """Stream bytes in, hash as they pass, commit atomically or leave nothing behind."""

    def __init__(self, store: ArtifactStore, max_bytes: int | None) -> None:
        self._store = store
        self._max_bytes = max_bytes
        self._sha = hashlib.sha256()
        self._size = 0
        fd, name = tempfile.mkstemp(dir=store.tmp_dir, prefix="upload-")
        fcntl.flock(fd, fcntl.LOCK_EX)  # ours until renamed: a sweep leaves it alone
        self.path = Path(name)
        self._file = os.fdopen(fd, "wb")
        self._committed = False

    def write(self, chunk: bytes) -> None:
        self._size += len(chunk)
        if self._max_bytes is not None and self._size > self._max_bytes:
            raise PayloadTooLarge(f"artifact exceeds the limit of {self._max_bytes} bytes")
        self._sha.update(chunk)
        self._file.write(chunk)

    def commit(self) -> StoredArtifact:
        if self._size == 0:
            raise InvalidInput("the upload is empty")
        self._file.flush()
        os.fsync(self._file.fileno())
        digest = f"sha256:{self._sha.hexdigest()}"
        try:  # renamed while still locked: no sweep sees it unlocked in between
            stored_ns = self._store._adopt(self.path, digest)
        finally:
            self._file.close()
        self._committed = True
        return StoredArtifact(digest, self._size, stored_ns)

    def discard(self) -> None:
        if not self._file.closed:
            self._file.close()
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> ArtifactWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._committed:
            self.discard()


class ArtifactStore:
    """Files under ``<root>/sha256/ab/<hex>``; remote stores mirror them into a cache."""

    def __init__(self, url: str, *, cache_dir: Path | None = None) -> None:
        self.url = url
        self._fs: Any = None
        if "://" in url and not url.startswith("file://"):
            import fsspec

            self._fs, self._remote_root = fsspec.core.url_to_fs(url)
            self.root = (cache_dir or Path(tempfile.gettempdir()) / "maas-artifact-cache").resolve()
        else:
            self.root = Path(url.removeprefix("file://")).expanduser().resolve()
        self.tmp_dir = self.root / "tmp"
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self._verified: dict[Path, tuple[int, int]] = {}
        self._lock = threading.Lock()
        self.sweep_temp()

    @property
    def shared_url(self) -> str:
        """The URL another process or node opens this same store with: a remote URL as
        given, a local root made absolute (a directory every node mounts there)."""
        return self.url if self._fs is not None else str(self.root)

    def sweep_temp(self) -> int:
        """Delete the temp files (uploads, fetches) of writes that died: those no
        process holds a lock on. Returns how many were deleted."""
        removed = 0
        with os.scandir(self.tmp_dir) as entries:
            for entry in entries:
                if entry.is_file(follow_symlinks=False) and _remove_if_abandoned(entry.path):
                    removed += 1
        if removed:
            log.info("deleted %d stale temp files from %s", removed, self.tmp_dir)
        return removed

    # -- paths ---------------------------------------------------------------------

    def _local(self, digest: str) -> Path:
        hex_digest = _hex_of(digest)
        return self.root / "sha256" / hex_digest[:2] / hex_digest

    def _remote(self, digest: str) -> str:
        hex_digest = _hex_of(digest)
        return f"{self._remote_root.rstrip('/')}/sha256/{hex_digest[:2]}/{hex_digest}"

    # -- writing -------------------------------------------------------------------

    def writer(self, *, max_bytes: int | None = None) -> ArtifactWriter:
        return ArtifactWriter(self, max_bytes)

    def put_file(self, path: Path) -> StoredArtifact:
        with path.open("rb") as source, self.writer() as writer:
            while chunk := source.read(_READ_CHUNK):
                writer.write(chunk)
            return writer.commit()

    def _adopt(self, temp: Path, digest: str) -> int | None:
        """Move a complete, fsynced temp file under its digest (or drop it if known);
        the blob's modification time after it (ns).

        Either way the blob is young afterwards, so a garbage collector spares it until
        the push that is about to reference it has recorded its version."""
        try:
            if self._fs is not None:
                # Uploaded again even when present: an object store cannot refresh a
                # modification time in place, and the collector goes by that time.
                self._fs.put_file(str(temp), self._remote(digest))
            final = self._local(digest)
            if final.exists():
                try:
                    os.utime(final)
                except FileNotFoundError:  # collected this instant: store this copy
                    pass
                else:
                    temp.unlink()
                    return _mtime_ns(final)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(temp, final)
            _fsync_dir(final.parent)
            return _mtime_ns(final)
        except OSError as exc:
            temp.unlink(missing_ok=True)
            raise StorageFailure(f"could not store the artifact ({exc.strerror})") from exc

    # -- reading -------------------------------------------------------------------

    def exists(self, digest: str) -> bool:
        if self._fs is not None:
            return bool(self._fs.exists(self._remote(digest)))
        return self._local(digest).exists()

    def size(self, digest: str) -> int:
        if self._fs is not None:
            return int(self._fs.size(self._remote(digest)))
        return self._local(digest).stat().st_size

    def local_path(self, digest: str, *, verify: bool = True) -> Path:
        """A local file with the artifact's bytes, checked against ``digest``."""
        path = self._local(digest)
        if self._fs is not None and not path.exists():
            self._fetch(digest, path)
        if not path.exists():
            raise ArtifactCorrupted(f"artifact {digest} is missing from the store")
        if verify:
            self._verify(path, digest)
        return path

    def _fetch(self, digest: str, path: Path) -> None:
        fd, name = tempfile.mkstemp(dir=self.tmp_dir, prefix="fetch-")
        fcntl.flock(fd, fcntl.LOCK_EX)  # held until renamed, as an upload's
        try:
            self._fs.get_file(self._remote(digest), name)
            path.parent.mkdir(parents=True, exist_ok=True)
            os.replace(name, path)
        finally:
            Path(name).unlink(missing_ok=True)
            os.close(fd)

    def _verify(self, path: Path, digest: str) -> None:
        stat = path.stat()
        state = (stat.st_size, stat.st_mtime_ns)
        with self._lock:
            if self._verified.get(path) == state:
                return
        actual = _hash_file(path)
        if actual != digest:
            raise ArtifactCorrupted(
                f"artifact {digest} is corrupted: its bytes hash to {actual}; refusing to load",
                details={"expected": digest, "actual": actual},
            )
        with self._lock:
            self._verified[path] = state

    def discard(self, artifact: StoredArtifact) -> bool:
        """Delete the blob of a write that was refused, unless another push stored the
        same bytes since (it refreshed the blob: ``stored_ns`` is then older than the
        blob), which may be inspecting it now; the garbage collector takes it later if
        nothing comes to reference it. Whether it was deleted. The caller has checked
        that no version or dataset references it."""
        if artifact.stored_ns is not None and _mtime_ns(self._local(artifact.digest)) not in (
            artifact.stored_ns,
            None,
        ):
            return False
        self.delete(artifact.digest)
        return True

    def delete(self, digest: str) -> None:
        path = self._local(digest)
        path.unlink(missing_ok=True)
        with self._lock:
            self._verified.pop(path, None)
        if self._fs is not None and self._fs.exists(self._remote(digest)):
            self._fs.rm(self._remote(digest))

    # -- garbage collection ----------------------------------------------------------

    def blobs(self) -> Iterator[StoredBlob]:
        """Every blob of the store (of the remote, for an fsspec store), in no order.
        A blob a collector left renamed aside (it died) is put back first."""
        if self._fs is not None:
            yield from self._remote_blobs()
            return
        top = self.root / "sha256"
        shards = [p for p in top.iterdir() if p.is_dir()] if top.is_dir() else []
        for shard in shards:
            for entry in os.scandir(shard):
                name = entry.name
                if name.startswith(_ASIDE):
                    name = name.removeprefix(_ASIDE)
                    _put_back(Path(entry.path), shard / name)
                if not _HEX.fullmatch(name) or name[:2] != shard.name:
                    continue  # not a blob: left alone
                try:
                    stat = (shard / name).stat(follow_symlinks=False)
                except FileNotFoundError:  # deleted meanwhile
                    continue
                yield StoredBlob(f"sha256:{name}", stat.st_size, stat.st_mtime)

    def _remote_blobs(self) -> Iterator[StoredBlob]:
        top = f"{self._remote_root.rstrip('/')}/sha256"
        try:
            found: dict[str, dict[str, Any]] = self._fs.find(top, detail=True)
        except FileNotFoundError:
            return
        for path, info in found.items():
            shard, _, name = path.rstrip("/").rpartition("/")
            if not _HEX.fullmatch(name) or shard.rpartition("/")[2] != name[:2]:
                continue
            yield StoredBlob(f"sha256:{name}", int(info["size"]), self._remote_modified(path))

    def _remote_modified(self, path: str) -> float | None:
        """The remote's modification time of ``path``; ``None`` if its fsspec
        implementation gives none."""
        try:
            modified = self._fs.modified(path)
        except (NotImplementedError, KeyError):  # not implemented, or not in its listing
            return None
        if not isinstance(modified, datetime):
            return None
        if modified.tzinfo is None:  # fsspec's naive times are UTC
            modified = modified.replace(tzinfo=UTC)
        return modified.timestamp()

    def collect(
        self, digest: str, *, older_than: float, in_use: Callable[[str], bool]
    ) -> int | None:
        """Delete an unreferenced blob unless it was modified at or after ``older_than``
        (a push wrote or reused it) or ``in_use(digest)`` now says it is referenced.
        Returns the bytes freed, ``None`` when it stays (or was gone already)."""
        if self._fs is not None:
            return self._collect_remote(digest, older_than, in_use)
        final = self._local(digest)
        try:
            if final.stat().st_mtime >= older_than or in_use(digest):
                return None
            aside = final.with_name(_ASIDE + final.name)
            os.rename(final, aside)
        except FileNotFoundError:
            return None
        try:  # a push that refreshed it before the rename shows here: put it back
            stat = aside.stat()
            keep = stat.st_mtime >= older_than
        except BaseException:
            _put_back(aside, final)
            raise
        if keep:
            _put_back(aside, final)
            return None
        aside.unlink(missing_ok=True)
        with self._lock:
            self._verified.pop(final, None)
        return stat.st_size

    def _collect_remote(
        self, digest: str, older_than: float, in_use: Callable[[str], bool]
    ) -> int | None:
        """An object store has no atomic rename: the time and references are checked
        just before the delete, which leaves a push a moment to slip in between."""
        remote = self._remote(digest)
        try:
            modified = self._remote_modified(remote)
            if modified is None or modified >= older_than or in_use(digest):
                return None
            size = int(self._fs.size(remote))
            self._fs.rm(remote)
        except FileNotFoundError:
            return None
        path = self._local(digest)
        path.unlink(missing_ok=True)
        with self._lock:
            self._verified.pop(path, None)
        return size

    def clear_cache(self) -> None:
        """Drop the local cache of a remote store (never the data of a local one)."""
        if self._fs is not None:
            shutil.rmtree(self.root / "sha256", ignore_errors=True)
