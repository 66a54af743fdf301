"""``safe_extract`` against crafted archives: nothing may land outside the target."""

from __future__ import annotations

import io
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from maas.errors import InvalidInput
from maas.registry.archives import safe_extract


def _tar(path: Path, *members: tuple[tarfile.TarInfo, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            info.size = len(data) if info.isfile() else 0
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return path


def _info(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    return info


def test_a_clean_tar_and_zip_extract(tmp_path: Path) -> None:
    tar = _tar(
        tmp_path / "ok.tar.gz",
        (_info("model/config.json"), b"{}"),
        (_info("model/weights.bin"), b"\x00" * 10),
        (_info("model/latest", tarfile.SYMTYPE, "weights.bin"), b""),
    )
    written = safe_extract(tar, tmp_path / "out")
    assert sorted(p.name for p in written) == ["config.json", "weights.bin"]
    assert (tmp_path / "out" / "model" / "latest").resolve().name == "weights.bin"

    zipped = tmp_path / "ok.zip"
    with zipfile.ZipFile(zipped, "w") as archive:
        archive.writestr("m/a.txt", "a")
    assert safe_extract(zipped, tmp_path / "zout") == [tmp_path / "zout" / "m" / "a.txt"]


@pytest.mark.parametrize(
    "member",
    [
        _info("../evil.txt"),
        _info("/etc/evil.txt"),
        _info("a/../../evil.txt"),
        _info("link", tarfile.SYMTYPE, "../../etc/passwd"),
        _info("link", tarfile.SYMTYPE, "/etc/passwd"),
        _info("hard", tarfile.LNKTYPE, "../outside"),
        _info("dev", tarfile.CHRTYPE),
        _info("fifo", tarfile.FIFOTYPE),
    ],
    ids=[
        "dotdot",
        "absolute",
        "nested-dotdot",
        "symlink-out",
        "symlink-abs",
        "hardlink-out",
        "device",
        "fifo",
    ],
)
def test_escaping_tar_members_are_refused_before_anything_is_written(
    tmp_path: Path, member: tarfile.TarInfo
) -> None:
    tar = _tar(tmp_path / "bad.tar.gz", (_info("fine.txt"), b"ok"), (member, b"x"))
    with pytest.raises(InvalidInput):
        safe_extract(tar, tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []
    assert not (tmp_path / "evil.txt").exists()


@pytest.mark.parametrize("name", ["../evil.txt", "/abs.txt", "C:/win.txt", "a\\..\\..\\evil.txt"])
def test_escaping_zip_members_are_refused(tmp_path: Path, name: str) -> None:
    zipped = tmp_path / "bad.zip"
    with zipfile.ZipFile(zipped, "w") as archive:
        archive.writestr("fine.txt", "ok")
        archive.writestr(zipfile.ZipInfo(name), "x")
    with pytest.raises(InvalidInput):
        safe_extract(zipped, tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


def test_zip_symlink_out_and_size_bomb_are_refused(tmp_path: Path) -> None:
    zipped = tmp_path / "link.zip"
    link = zipfile.ZipInfo("link")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    with zipfile.ZipFile(zipped, "w") as archive:
        archive.writestr(link, "../../etc/passwd")
    with pytest.raises(InvalidInput):
        safe_extract(zipped, tmp_path / "out")

    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("zeros", b"\x00" * 1_000_000)
    with pytest.raises(InvalidInput, match="limit"):
        safe_extract(bomb, tmp_path / "bout", max_bytes=100_000)


def test_other_files_are_not_archives(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"not an archive")
    with pytest.raises(InvalidInput):
        safe_extract(path, tmp_path / "out")
