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
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from maas.errors import ArtifactCorrupted, InvalidInput, PayloadTooLarge, StorageFailure

__all__ = ["ArtifactStore", "ArtifactWriter", "StoredArtifact"]

log = logging.getLogger("maas.registry")

_DIGEST = re.compile(r"sha256:([0-9a-f]{64})")
_READ_CHUNK = 1024 * 1024


@dataclass(frozen=True, slots=True)
class StoredArtifact:
    digest: str
    size_bytes: int


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


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
        artifact = StoredArtifact(f"sha256:{self._sha.hexdigest()}", self._size)
        try:  # renamed while still locked: no sweep sees it unlocked in between
            self._store._adopt(self.path, artifact.digest)
        finally:
            self._file.close()
        self._committed = True
        return artifact

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

    def _adopt(self, temp: Path, digest: str) -> None:
        """Move a complete, fsynced temp file under its digest (or drop it if known)."""
        try:
            if self._fs is not None and not self._fs.exists(self._remote(digest)):
                self._fs.put_file(str(temp), self._remote(digest))
            final = self._local(digest)
            if final.exists():
                temp.unlink()
                return
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(temp, final)
            _fsync_dir(final.parent)
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

    def delete(self, digest: str) -> None:
        path = self._local(digest)
        path.unlink(missing_ok=True)
        with self._lock:
            self._verified.pop(path, None)
        if self._fs is not None and self._fs.exists(self._remote(digest)):
            self._fs.rm(self._remote(digest))

    def clear_cache(self) -> None:
        """Drop the local cache of a remote store (never the data of a local one)."""
        if self._fs is not None:
            shutil.rmtree(self.root / "sha256", ignore_errors=True)
