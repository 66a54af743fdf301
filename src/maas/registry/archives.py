"""Safe extraction of uploaded archives (zip, tar): nothing lands outside ``dest``.

Every member is checked before anything is written, so a refused archive leaves no
partial tree: names must be relative and stay inside ``dest`` after normalisation
(no ``..``, no absolute paths or drive letters), links must point inside ``dest``,
and device files, FIFOs and the like are refused (``InvalidInput``). Tar extraction
then also runs under the stdlib ``data`` filter, as a second line of defence.

``ExtractLimits`` bounds what a small upload can make the server write: the members
an archive may hold and the bytes they may expand to (``PayloadTooLarge``): an
absolute bound, and a ratio to the archive's own size (real weights barely compress;
a zip bomb expands a thousandfold), counted from the headers before anything is
written and again from the bytes as they are (a zip bomb lies in its headers).
A damaged archive, or one using a feature Python cannot read
(encryption, an unknown compression), is ``InvalidInput`` too, never a 500.
"""

from __future__ import annotations

import gzip
import lzma
import os
import posixpath
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from maas.config import LimitSettings
from maas.errors import InvalidInput, PayloadTooLarge

__all__ = [
    "DEFAULT_EXTRACT_LIMITS",
    "ExtractLimits",
    "discard_unpacked",
    "is_archive",
    "safe_extract",
    "unpacked",
    "unpacked_source",
]

_COPY_CHUNK = 1024 * 1024
_MAX_LINK_BYTES = 4096  # PATH_MAX: a longer symlink target is no real link
_MAX_NAME_CHARS = 1024
_MAX_PART_BYTES = 255  # NAME_MAX of common file systems

#: What a damaged or unreadable archive raises from zipfile, tarfile and their codecs.
_BROKEN = (
    tarfile.TarError,  # ReadError, CompressionError, FilterError, …
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    EOFError,
    zlib.error,
    lzma.LZMAError,
    gzip.BadGzipFile,
    NotImplementedError,  # a zip compression method Python lacks
    RuntimeError,  # an encrypted zip member
    ValueError,
    UnicodeDecodeError,
)


@dataclass(frozen=True, slots=True)
class ExtractLimits:
    """How much one archive may unpack to: total bytes (at most ``max_ratio`` times the
    archive's own size), and members (files, dirs, links)."""

    max_bytes: int
    max_members: int
    max_ratio: float | None = None

    @classmethod
    def from_settings(cls, limits: LimitSettings) -> ExtractLimits:
        return cls(limits.max_extract_bytes, limits.max_archive_members, limits.max_extract_ratio)

    def for_archive(self, size: int) -> ExtractLimits:
        """These limits with the byte bound of an archive of ``size`` bytes."""
        if self.max_ratio is None:
            return self
        return ExtractLimits(min(self.max_bytes, int(size * self.max_ratio)), self.max_members)


#: The limits of default settings, for callers that have no settings at hand.
DEFAULT_EXTRACT_LIMITS = ExtractLimits.from_settings(LimitSettings())


#: The files that mark a model directory: a transformers ``config.json``, or the
#: manifest of an ONNX text or image model (``maas.runtimes.hf.onnx_text``,
#: ``maas.runtimes.onnx_image``).
_MARKERS = ("config.json", "onnx_text.json", "onnx_image.json")
#: The root of a Keras 3 ``.keras`` file: a zip with a ``config.json`` too, but one
#: artifact (``maas.runtimes.keras``), not a model directory.
_KERAS_FILE = frozenset({"metadata.json", "config.json", "model.weights.h5"})


def is_archive(path: Path) -> bool:
    """A model directory packed for upload: a zip or a tar (any compression) with a
    marker file (``config.json``, ``onnx_text.json``) at its root or in its one top
    folder. Other zips (a ``.skops`` or a ``.keras`` file) are single-file artifacts."""
    if not path.is_file():
        return False
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        elif tarfile.is_tarfile(path):
            with tarfile.open(path) as tar:
                names = tar.getnames()
        else:
            return False
    except (OSError, *_BROKEN):
        return False
    if set(names) >= _KERAS_FILE:
        return False
    return any(PurePosixPath(name).name in _MARKERS and name.count("/") <= 1 for name in names)


def unpacked(
    archive_path: Path, cache_root: Path, *, limits: ExtractLimits = DEFAULT_EXTRACT_LIMITS
) -> Path:
    """The archive extracted (safely) under ``cache_root``, once: later calls find it.

    Keyed by the archive's file name, which in the artifact store is its digest, and
    made atomically (a temp directory renamed into place), so two loads racing each
    other or a crash mid-extraction never leave a half tree under the key.
    """
    target = cache_root / "unpacked" / archive_path.name
    if target.is_dir():
        return _root_of(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
    try:
        safe_extract(archive_path, temp, limits=limits)
        os.replace(temp, target)
    except OSError:
        shutil.rmtree(temp, ignore_errors=True)
        if not target.is_dir():
            raise
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return _root_of(target)


def discard_unpacked(archive_name: str, cache_root: Path) -> None:
    """Remove what ``unpacked`` made of the archive named ``archive_name`` (in the
    artifact store, its digest's hex): the archive is being deleted."""
    if archive_name and "/" not in archive_name and archive_name not in (".", ".."):
        shutil.rmtree(cache_root / "unpacked" / archive_name, ignore_errors=True)


def unpacked_source(name: str) -> str | None:
    """The digest of the blob the directory ``unpacked/<name>`` was made from (the store
    names a blob by its digest's hex), or ``None`` for a name no blob gives."""
    if len(name) == 64 and all(c in "0123456789abcdef" for c in name):
        return f"sha256:{name}"
    return None


def _root_of(tree: Path) -> Path:
    """An archive of one top-level directory (``tar -C parent model/``) is that directory."""
    entries = [entry for entry in tree.iterdir() if not entry.name.startswith(".")]
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return tree


def safe_extract(
    archive_path: Path, dest: Path, *, limits: ExtractLimits = DEFAULT_EXTRACT_LIMITS
) -> list[Path]:
    """Extract a zip or tar (any compression) into ``dest``; return the files written.

    Raises ``InvalidInput`` for an unsafe member, a damaged archive or a file that is
    neither zip nor tar, and ``PayloadTooLarge`` for one past ``limits``.
    """
    dest.mkdir(parents=True, exist_ok=True)
    limits = limits.for_archive(archive_path.stat().st_size)
    with _readable(archive_path):
        if zipfile.is_zipfile(archive_path):
            return _extract_zip(archive_path, dest, limits)
        if tarfile.is_tarfile(archive_path):
            return _extract_tar(archive_path, dest, limits)
    raise InvalidInput("the upload is neither a zip nor a tar archive")


@contextmanager
def _readable(archive_path: Path) -> Iterator[None]:
    """Turn what a damaged archive raises into ``InvalidInput``; an ``OSError`` with an
    errno (a full disk) is the server's and passes through."""
    try:
        yield
    except OSError as exc:
        if exc.errno is not None or isinstance(exc, FileNotFoundError | PermissionError):
            raise
        raise InvalidInput(f"the archive is damaged ({type(exc).__name__})") from None
    except _BROKEN as exc:
        raise InvalidInput(
            f"the archive is damaged or uses a feature maas cannot read ({type(exc).__name__})"
        ) from None


def _inside(name: str) -> PurePosixPath:
    """The normalised relative path of a member, or ``InvalidInput`` if it escapes."""
    unified = name.replace("\\", "/")
    path = PurePosixPath(unified)
    if not unified or path.is_absolute() or (path.parts and ":" in path.parts[0]):
        raise InvalidInput(f"archive member {name[:200]!r} has an absolute path")
    if ".." in path.parts:
        raise InvalidInput(f"archive member {name[:200]!r} leaves the target directory")
    too_long = any(
        len(part.encode("utf-8", "surrogateescape")) > _MAX_PART_BYTES for part in path.parts
    )
    if len(unified) > _MAX_NAME_CHARS or too_long:
        raise InvalidInput(f"archive member {name[:200]!r} has a name too long to write")
    return path


def _check_link(member: str, target: str, *, hard: bool) -> None:
    """A link's target, resolved from the member's directory (tar hard links: from the
    root), must stay inside the target directory."""
    if target.startswith("/") or PurePosixPath(target.replace("\\", "/")).is_absolute():
        raise InvalidInput(f"archive link {member!r} points outside the target directory")
    base = "" if hard else posixpath.dirname(member)
    resolved = posixpath.normpath(posixpath.join(base, target.replace("\\", "/")))
    if resolved == ".." or resolved.startswith("../"):
        raise InvalidInput(f"archive link {member!r} points outside the target directory")


def _check_count(count: int, limits: ExtractLimits) -> None:
    if count > limits.max_members:
        raise PayloadTooLarge(f"the archive holds more than {limits.max_members} members")


def _check_size(total: int, limits: ExtractLimits) -> None:
    if total > limits.max_bytes:
        raise PayloadTooLarge(
            f"the archive expands past the limit of {limits.max_bytes} bytes (at most "
            "MAAS_LIMITS__MAX_EXTRACT_BYTES, and MAAS_LIMITS__MAX_EXTRACT_RATIO times the "
            "archive's own size)",
            details={"max_bytes": limits.max_bytes},
        )


def _tar_members(tar: tarfile.TarFile, limits: ExtractLimits) -> list[tarfile.TarInfo]:
    """The members, read one header at a time so a huge count stops at the limit."""
    members = []
    for member in tar:
        members.append(member)
        _check_count(len(members), limits)
    return members


def _extract_tar(archive_path: Path, dest: Path, limits: ExtractLimits) -> list[Path]:
    with tarfile.open(archive_path) as tar:
        members = _tar_members(tar, limits)
        for member in members:
            _inside(member.name)
            if member.issym() or member.islnk():
                _check_link(member.name, member.linkname, hard=member.islnk())
            elif not (member.isfile() or member.isdir()):
                raise InvalidInput(f"archive member {member.name!r} is a device or special file")
        _check_size(sum(m.size for m in members if m.isfile()), limits)
        tar.extractall(dest, members=members, filter="data")
    return [dest / _inside(m.name) for m in members if m.isfile()]


def _link_target(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> str:
    if info.file_size > _MAX_LINK_BYTES:
        raise InvalidInput(f"archive link {info.filename!r} has a target too long to be a path")
    try:
        return archive.read(info).decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput(
            f"archive link {info.filename!r} has a target that is not UTF-8"
        ) from None


def _extract_zip(archive_path: Path, dest: Path, limits: ExtractLimits) -> list[Path]:
    written = []
    with zipfile.ZipFile(archive_path) as archive:
        infos = archive.infolist()
        _check_count(len(infos), limits)
        for info in infos:
            _inside(info.filename)
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                _check_link(info.filename, _link_target(archive, info), hard=False)
            elif stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
                raise InvalidInput(f"archive member {info.filename!r} is a special file")
        _check_size(sum(i.file_size for i in infos), limits)
        total = 0
        for info in infos:
            target = dest.joinpath(*_inside(info.filename).parts)
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            # Links become regular files holding their target, as zipfile itself does.
            with archive.open(info) as source, open(target, "wb") as sink:
                while chunk := source.read(_COPY_CHUNK):
                    total += len(chunk)
                    _check_size(total, limits)  # the bytes, not only what headers claim
                    sink.write(chunk)
            os.chmod(target, 0o644)
            written.append(target)
    return written
