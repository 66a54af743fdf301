"""Safe extraction of uploaded archives (zip, tar): nothing lands outside ``dest``.

Every member is checked before anything is written, so a refused archive leaves no
partial tree: names must be relative and stay inside ``dest`` after normalisation
(no ``..``, no absolute paths or drive letters), links must point inside ``dest``,
and device files, FIFOs and the like are refused. Tar extraction then also runs
under the stdlib ``data`` filter, as a second line of defence.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import stat
import tarfile
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from maas.errors import InvalidInput

__all__ = ["is_archive", "safe_extract", "unpacked"]


def is_archive(path: Path) -> bool:
    """A model directory packed for upload: a zip or a tar (any compression) with a
    ``config.json`` at its root or in its one top folder. Other zips (a ``.skops``
    file is one) are single-file artifacts."""
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
    except (OSError, zipfile.BadZipFile, tarfile.TarError):
        return False
    return any(PurePosixPath(name).name == "config.json" and name.count("/") <= 1 for name in names)


def unpacked(archive_path: Path, cache_root: Path, *, max_bytes: int | None = None) -> Path:
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
        safe_extract(archive_path, temp, max_bytes=max_bytes)
        os.replace(temp, target)
    except OSError:
        shutil.rmtree(temp, ignore_errors=True)
        if not target.is_dir():
            raise
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return _root_of(target)


def _root_of(tree: Path) -> Path:
    """An archive of one top-level directory (``tar -C parent model/``) is that directory."""
    entries = [entry for entry in tree.iterdir() if not entry.name.startswith(".")]
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return tree


def safe_extract(archive_path: Path, dest: Path, *, max_bytes: int | None = None) -> list[Path]:
    """Extract a zip or tar (any compression) into ``dest``; return the files written.

    Raises ``InvalidInput`` for an unsafe member, an archive past ``max_bytes``
    uncompressed, or a file that is neither zip nor tar.
    """
    dest.mkdir(parents=True, exist_ok=True)
    if zipfile.is_zipfile(archive_path):
        return _extract_zip(archive_path, dest, max_bytes)
    if tarfile.is_tarfile(archive_path):
        return _extract_tar(archive_path, dest, max_bytes)
    raise InvalidInput("the upload is neither a zip nor a tar archive")


def _inside(name: str) -> PurePosixPath:
    """The normalised relative path of a member, or ``InvalidInput`` if it escapes."""
    unified = name.replace("\\", "/")
    path = PurePosixPath(unified)
    if not unified or path.is_absolute() or (path.parts and ":" in path.parts[0]):
        raise InvalidInput(f"archive member {name!r} has an absolute path")
    if ".." in path.parts:
        raise InvalidInput(f"archive member {name!r} leaves the target directory")
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


def _budget(sizes: list[int], max_bytes: int | None) -> None:
    if max_bytes is not None and sum(sizes) > max_bytes:
        raise InvalidInput(f"archive expands past the limit of {max_bytes} bytes")


def _extract_tar(archive_path: Path, dest: Path, max_bytes: int | None) -> list[Path]:
    with tarfile.open(archive_path) as tar:
        members = tar.getmembers()
        for member in members:
            _inside(member.name)
            if member.issym() or member.islnk():
                _check_link(member.name, member.linkname, hard=member.islnk())
            elif not (member.isfile() or member.isdir()):
                raise InvalidInput(f"archive member {member.name!r} is a device or special file")
        _budget([m.size for m in members if m.isfile()], max_bytes)
        tar.extractall(dest, members=members, filter="data")
    return [dest / _inside(m.name) for m in members if m.isfile()]


def _extract_zip(archive_path: Path, dest: Path, max_bytes: int | None) -> list[Path]:
    written = []
    with zipfile.ZipFile(archive_path) as archive:
        infos = archive.infolist()
        for info in infos:
            _inside(info.filename)
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                _check_link(info.filename, archive.read(info).decode(), hard=False)
            elif stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
                raise InvalidInput(f"archive member {info.filename!r} is a special file")
        _budget([i.file_size for i in infos], max_bytes)
        for info in infos:
            target = dest.joinpath(*_inside(info.filename).parts)
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            # Links become regular files holding their target, as zipfile itself does.
            with archive.open(info) as source, open(target, "wb") as sink:
                shutil.copyfileobj(source, sink)
            os.chmod(target, 0o644)
            written.append(target)
    return written
