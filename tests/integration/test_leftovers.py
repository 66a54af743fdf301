"""What refused pushes and crashes leave on disk, against a real server: nothing that
outlives them (item 2: archives; item 3: temp files and unreferenced artifacts)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.server import RunningServer, start_server

_CONFIG = json.dumps({"architectures": ["BertModel"], "model_type": "bert"}).encode()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(tmp_path_factory.mktemp("leftovers-home"), timeout_s=300)
    yield running
    running.stop()


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _unpacked(upload: bytes) -> Path:
    """Where the server unpacks this upload: the cache, keyed by the blob's digest."""
    return Path(os.environ["MAAS_CACHE_DIR"]) / "unpacked" / hashlib.sha256(upload).hexdigest()


def _push(server: RunningServer, name: str, upload: bytes) -> tuple[int, dict[str, object]]:
    # A refusal loads transformers first: allow a busy machine its time.
    with httpx.Client(base_url=server.url, headers=server.auth_headers, timeout=300) as http:
        response = http.post(
            f"/api/v1/models/{name}/versions", params={"filename": "model.zip"}, content=upload
        )
    return response.status_code, response.json()


# -- item 2: zip bombs ------------------------------------------------------------------------


def test_a_zip_bomb_is_refused_by_its_ratio_and_leaves_nothing(server: RunningServer) -> None:
    # 64 MiB of zeros pack into ~64 KiB: a thousand times the upload, far past the ratio.
    bomb = _zip({"config.json": _CONFIG, "model.safetensors": bytes(64 * 1024 * 1024)})
    assert len(bomb) < 1024 * 1024
    status, body = _push(server, "bomb", bomb)
    assert status == 413, body
    assert body["code"] == "payload_too_large"
    assert "ratio" in str(body["error"]).lower()
    assert not _unpacked(bomb).exists()
    assert not list(_unpacked(bomb).parent.glob(".tmp-*"))
    assert not list((server.home / "artifacts" / "sha256").rglob(_unpacked(bomb).name))


def test_a_refused_archive_leaves_no_unpacked_folder(server: RunningServer) -> None:
    # Within the ratio, unpacked in full, then refused: its weights are no safetensors.
    upload = _zip({"config.json": _CONFIG, "model.safetensors": os.urandom(256 * 1024)})
    status, body = _push(server, "broken", upload)
    assert 400 <= status < 500, body
    assert not _unpacked(upload).exists(), list(_unpacked(upload).rglob("*"))
    assert not list((server.home / "artifacts" / "sha256").rglob(_unpacked(upload).name))


# -- item 3: temp files of dead uploads ---------------------------------------------------------


def test_a_kill_9_mid_upload_leaves_no_temp_file_after_the_next_start(tmp_path: Path) -> None:
    import signal
    import threading
    import time

    home = tmp_path / "home"
    first = start_server(home, timeout_s=300)
    tmp = home / "artifacts" / "tmp"

    def slow_upload() -> Iterator[bytes]:
        yield os.urandom(1024 * 1024)
        time.sleep(60)  # the server dies meanwhile
        yield b""

    def push() -> None:
        client = httpx.Client(base_url=first.url, headers=first.auth_headers, timeout=90)
        with client as http, contextlib.suppress(httpx.HTTPError):
            http.post(
                "/api/v1/models/half/versions",
                params={"filename": "m.onnx"},
                content=slow_upload(),
            )

    threading.Thread(target=push, daemon=True).start()
    deadline = time.monotonic() + 60
    while not [p for p in tmp.glob("upload-*") if p.stat().st_size]:
        assert time.monotonic() < deadline, "the upload never reached the disk"
        time.sleep(0.1)
    first.process.send_signal(signal.SIGKILL)
    first.process.wait()
    first.stop()
    assert list(tmp.glob("upload-*"))  # what the crash left, a moment old

    second = start_server(home, timeout_s=300)
    try:
        assert list(tmp.glob("upload-*")) == []
    finally:
        second.stop()
