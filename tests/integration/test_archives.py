"""Crafted archives pushed over HTTP: refused with a stable code, nothing written outside
the server's directories, and no artifact left in the store.

The server runs with low extraction limits (1 MiB, 20 members) so that a bomb stays
small; its cache is inside its home, so every file it writes can be listed.
"""

from __future__ import annotations

import io
import stat
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.server import RunningServer, start_server

LIMITS = {
    "MAAS_LIMITS__MAX_EXTRACT_BYTES": str(1024 * 1024),
    "MAAS_LIMITS__MAX_ARCHIVE_MEMBERS": "20",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    home = tmp_path_factory.mktemp("archives-home")
    running = start_server(home, env={**LIMITS, "MAAS_CACHE_DIR": str(home / "cache")})
    try:
        yield running
    finally:
        running.stop()


def _tar(*members: tuple[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _zip(*members: tuple[zipfile.ZipInfo | str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for info, data in members:
            archive.writestr(info, data)
    return buffer.getvalue()


def _push(server: RunningServer, filename: str, content: bytes) -> tuple[int, str]:
    with server.client() as http:
        response = http.post(
            "/api/v1/models/packed/versions", params={"filename": filename}, content=content
        )
    return response.status_code, response.json()["code"]


def _stored_artifacts(server: RunningServer) -> list[Path]:
    return [p for p in (server.home / "artifacts" / "sha256").rglob("*") if p.is_file()]


def _files_named(root: Path, name: str) -> list[Path]:
    return list(root.rglob(f"*{name}*"))


def test_a_tar_member_leaving_the_target_is_refused(server: RunningServer, tmp_path: Path) -> None:
    escaping = _tar(("config.json", b"{}"), ("../evil-dotdot", b"owned"))
    assert _push(server, "model.tar.gz", escaping) == (400, "invalid_input")
    absolute = tmp_path / "evil-absolute"
    rooted = _tar(("config.json", b"{}"), (str(absolute), b"owned"))
    assert _push(server, "model.tar.gz", rooted) == (400, "invalid_input")
    assert not absolute.exists()
    assert _files_named(server.home, "evil") == []
    assert _stored_artifacts(server) == []


def test_a_zip_bomb_is_refused_and_leaves_nothing(server: RunningServer) -> None:
    bomb = _zip(("config.json", b"{}"), ("weights.bin", bytes(64 * 1024 * 1024)))
    assert len(bomb) < 200_000
    assert _push(server, "model.zip", bomb) == (413, "payload_too_large")
    assert _files_named(server.home, "weights") == []
    assert _stored_artifacts(server) == []


def test_an_archive_of_too_many_members_is_refused(server: RunningServer) -> None:
    many = _tar(("config.json", b"{}"), *((f"f{i}.txt", b"") for i in range(30)))
    assert _push(server, "model.tar.gz", many) == (413, "payload_too_large")
    assert _stored_artifacts(server) == []


def test_a_zip_link_to_bytes_that_are_no_path_is_refused_not_a_500(
    server: RunningServer,
) -> None:
    link = zipfile.ZipInfo("tokenizer.json")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    archive = _zip(("config.json", b"{}"), (link, b"\xff\xfe\xfd"))
    assert _push(server, "model.zip", archive) == (400, "invalid_input")
    assert _stored_artifacts(server) == []
