"""``safe_extract`` against crafted archives: nothing may land outside the target."""

from __future__ import annotations

import io
import random
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from maas.errors import InvalidInput, PayloadTooLarge
from maas.registry.archives import ExtractLimits, safe_extract, unpacked


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


def _zip_link(path: Path, target: bytes | str) -> Path:
    link = zipfile.ZipInfo("link")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("fine.txt", "ok")
        archive.writestr(link, target)
    return path


@pytest.mark.parametrize(
    "target",
    [b"../../etc/passwd", b"/etc/passwd", b"\xff\xfe not utf-8", b"a" * 5000],
    ids=["outside", "absolute", "not-utf-8", "longer-than-a-path"],
)
def test_zip_symlinks_out_or_unreadable_are_refused(tmp_path: Path, target: bytes) -> None:
    with pytest.raises(InvalidInput):
        safe_extract(_zip_link(tmp_path / "link.zip", target), tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


SMALL = ExtractLimits(max_bytes=1024 * 1024, max_members=20)


def test_a_zip_bomb_is_refused_before_a_byte_is_written(tmp_path: Path) -> None:
    """50 MB of zeros deflate to about 50 KB: a small upload, a large disk."""
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("config.json", "{}")
        archive.writestr("zeros", bytes(50 * 1024 * 1024))
    assert bomb.stat().st_size < 100_000
    with pytest.raises(PayloadTooLarge, match="expands past"):
        safe_extract(bomb, tmp_path / "out", limits=SMALL)
    assert list((tmp_path / "out").iterdir()) == []


def test_a_tar_bomb_is_refused_and_leaves_no_cache_entry(tmp_path: Path) -> None:
    bomb = _tar(
        tmp_path / "bomb.tar.gz", (_info("config.json"), b"{}"), (_info("z"), bytes(5_000_000))
    )
    with pytest.raises(PayloadTooLarge):
        unpacked(bomb, tmp_path / "cache", limits=SMALL)
    assert list((tmp_path / "cache" / "unpacked").iterdir()) == []


@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_an_archive_of_too_many_members_is_refused(tmp_path: Path, kind: str) -> None:
    names = [f"f{i}" for i in range(SMALL.max_members + 1)]
    if kind == "zip":
        path = tmp_path / "many.zip"
        with zipfile.ZipFile(path, "w") as archive:
            for name in names:
                archive.writestr(name, "")
    else:
        path = _tar(tmp_path / "many.tar.gz", *((_info(name), b"") for name in names))
    with pytest.raises(PayloadTooLarge, match="more than 20 members"):
        safe_extract(path, tmp_path / "out", limits=SMALL)
    assert list((tmp_path / "out").iterdir()) == []


def test_within_the_limits_extracts(tmp_path: Path) -> None:
    names = [f"f{i}" for i in range(SMALL.max_members)]
    path = _tar(tmp_path / "ok.tar.gz", *((_info(name), b"x" * 1000) for name in names))
    assert len(safe_extract(path, tmp_path / "out", limits=SMALL)) == SMALL.max_members


def test_a_damaged_tar_is_invalid_input_not_a_crash(tmp_path: Path) -> None:
    whole = _tar(
        tmp_path / "ok.tar.gz",
        (_info("config.json"), b"{}"),
        (_info("w"), bytes(range(256)) * 4000),
    )
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(whole.read_bytes()[:-2000])
    with pytest.raises(InvalidInput, match="damaged"):
        safe_extract(cut, tmp_path / "out")


def test_a_zip_with_a_corrupted_member_is_invalid_input(tmp_path: Path) -> None:
    path = tmp_path / "bad.zip"
    data = random.Random(0).randbytes(100_000)  # incompressible: within the default ratio
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("w", data)
    raw = bytearray(path.read_bytes())
    raw[60:80] = bytes(20)  # inside the member's compressed bytes
    path.write_bytes(bytes(raw))
    with pytest.raises(InvalidInput, match="damaged"):
        safe_extract(path, tmp_path / "out")


def test_a_member_name_too_long_to_write_is_invalid_input(tmp_path: Path) -> None:
    path = _tar(tmp_path / "long.tar.gz", (_info("d/" + "n" * 300), b"x"))
    with pytest.raises(InvalidInput, match="too long"):
        safe_extract(path, tmp_path / "out")


def test_other_files_are_not_archives(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"not an archive")
    with pytest.raises(InvalidInput):
        safe_extract(path, tmp_path / "out")


def test_an_archive_may_not_expand_past_its_ratio(tmp_path: Path) -> None:
    path = tmp_path / "bomb.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("zeros", bytes(4 * 1024 * 1024))  # ~1000x: a zip bomb in small
    limits = ExtractLimits(max_bytes=1 << 30, max_members=10, max_ratio=20)
    with pytest.raises(PayloadTooLarge, match="RATIO"):
        safe_extract(path, tmp_path / "out", limits=limits)
    assert not (tmp_path / "out" / "zeros").exists()  # refused from the headers, unwritten
