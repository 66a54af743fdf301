"""Garbage collection of unreferenced artifacts against a real server (issue 12, item 3):
``maas gc`` (remote and ``--local``), ``POST /api/v1/admin/gc`` and the periodic pass
delete old orphans and their cache directories, and leave alone every blob a version or
dataset uses and every blob young enough to belong to a push in progress."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.forked import run_maas
from tests.integration.server import RunningServer, start_server
from tests.jobs_data import tickets_csv

LONG_AGO = 1_000_000_000.0  # 2001: outside any grace window
_IRIS_ROW = {
    "name": "float_input",
    "datatype": "FP32",
    "shape": [1, 4],
    "data": [5.1, 3.5, 1.4, 0.2],
}


def _env(server: RunningServer) -> dict[str, str]:
    """The CLI's environment: this server's URL, key and cache (its own, see the fixture)."""
    return {
        **os.environ,
        "COLUMNS": "200",
        "MAAS_URL": server.url,
        "MAAS_API_KEY": server.api_key or "",
        "MAAS_CACHE_DIR": str(server.home / "cache"),
    }


def _maas(server: RunningServer, *args: str) -> subprocess.CompletedProcess[str]:
    ran = run_maas(args, _env(server), timeout=120)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    return ran


def _start(home: Path, interval_s: str) -> RunningServer:
    # A cache of its own (the session's is shared by every test server) in the place a
    # server's own cache has, MAAS_HOME/cache, so the pass treats it as private.
    return start_server(
        home,
        env={"MAAS_CACHE_DIR": str(home / "cache"), "MAAS_STORAGE__GC_INTERVAL_S": interval_s},
    )


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RunningServer]:
    running = _start(tmp_path / "home", "0")  # no periodic pass: the test runs them
    yield running
    running.stop()


@dataclass
class Planted:
    """Blobs written straight into the stores, as crashes and pushes leave them."""

    server: RunningServer

    def blob(self, content: bytes, *, store: str = "models", modified: float | None) -> Path:
        hex_digest = hashlib.sha256(content).hexdigest()
        root = self.server.home / "artifacts"
        path = (root / "datasets" if store == "datasets" else root) / "sha256"
        path = path / hex_digest[:2] / hex_digest
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        if modified is not None:
            os.utime(path, (modified, modified))
        return path

    def unpacked(self, blob: Path) -> Path:
        folder = self.server.home / "cache" / "unpacked" / blob.name
        folder.mkdir(parents=True)
        (folder / "config.json").write_text("{}")
        return folder


def _push_model_and_dataset(server: RunningServer, onnx: Path, tmp_path: Path) -> list[Path]:
    """An ONNX model (aliased production) and a dataset; their blobs, made old."""
    csv = tickets_csv(tmp_path / "tickets.csv")
    with server.client() as http:
        pushed = http.post(
            "/api/v1/models/iris/versions",
            params={"filename": "iris.onnx", "alias": "production"},
            content=onnx.read_bytes(),
        )
        assert pushed.status_code == 201, pushed.text
        dataset = http.post(
            "/api/v1/datasets",
            params={"name": "tickets", "filename": "tickets.csv"},
            content=csv.read_bytes(),
        )
        assert dataset.status_code == 201, dataset.text
    root = server.home / "artifacts"
    used = [
        root / "sha256" / pushed.json()["digest"][7:9] / pushed.json()["digest"][7:],
        root / "datasets" / "sha256" / dataset.json()["digest"][7:9] / dataset.json()["digest"][7:],
    ]
    for path in used:  # only their references keep them now
        os.utime(path, (LONG_AGO, LONG_AGO))
    return used


def _still_serves(server: RunningServer) -> None:
    with server.client() as http:
        answer = http.post("/v2/models/iris/infer", json={"inputs": [_IRIS_ROW]})
        assert answer.status_code == 200, answer.text
        preview = http.get("/api/v1/datasets/tickets/preview", params={"limit": 3})
        assert preview.status_code == 200, preview.text
        assert len(preview.json()["head"]) == 3


def test_maas_gc_deletes_old_orphans_and_keeps_what_is_used_or_young(
    server: RunningServer, iris_onnx: Path, tmp_path: Path
) -> None:
    used = _push_model_and_dataset(server, iris_onnx, tmp_path)
    plant = Planted(server)
    lost = plant.blob(b"a push killed during its inspection", modified=LONG_AGO)
    lost_dir = plant.unpacked(lost)
    lost_dataset = plant.blob(b"a dataset cut before its row", store="datasets", modified=LONG_AGO)
    inspecting = plant.blob(b"a push being inspected right now", modified=None)

    dry = json.loads(_maas(server, "-o", "json", "gc", "--dry-run").stdout)
    assert dry["dry_run"] is True
    assert {(b["store"], b["digest"][7:]) for b in dry["collected"]} == {
        ("models", lost.name),
        ("datasets", lost_dataset.name),
    }
    assert [c["path"] for c in dry["caches"]] == [f"unpacked/{lost.name}"]
    assert (dry["referenced"], dry["young"]) == (2, 1)
    local = json.loads(
        _maas(server, "-o", "json", "gc", "--local", "--home", str(server.home), "--dry-run").stdout
    )
    digests = [[b["digest"] for b in report["collected"]] for report in (local, dry)]
    assert sorted(digests[0]) == sorted(digests[1]) and local["caches"] == dry["caches"]
    assert lost.exists() and lost_dataset.exists() and lost_dir.exists()

    table = _maas(server, "gc").stdout
    assert "deleted" in table and lost.name[:12] in table, table
    assert f"freed {dry['freed_bytes']} bytes" in table, table

    assert not lost.exists() and not lost_dataset.exists() and not lost_dir.exists()
    assert inspecting.exists()
    assert all(path.exists() for path in used)
    _still_serves(server)
    with server.client() as http:
        audit = http.get("/api/v1/audit", params={"action": "artifacts.gc"}).json()
    assert [(r["outcome"], r["details"]["dry_run"]) for r in audit] == [("ok", False), ("ok", True)]


def test_the_admin_route_collects_with_its_own_grace_and_only_for_admins(
    server: RunningServer, iris_onnx: Path, tmp_path: Path
) -> None:
    used = _push_model_and_dataset(server, iris_onnx, tmp_path)
    young = Planted(server).blob(b"written a moment ago", modified=None)
    with server.client() as http:
        consumer = http.post("/api/v1/keys", json={"name": "app", "role": "consumer"}).json()
        refused = http.post(
            "/api/v1/admin/gc", headers={"Authorization": f"Bearer {consumer['key']}"}
        )
        assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
        for bad in ({"grace_s": -1}, {"grace_s": "soon"}, {"dry_run": True, "extra": 1}):
            answer = http.post("/api/v1/admin/gc", json=bad)
            assert answer.status_code == 400, (bad, answer.text)
        kept = http.post("/api/v1/admin/gc")  # no body: the defaults, grace 1 h
        assert kept.status_code == 200, kept.text
        assert kept.json()["collected"] == [] and young.exists()
        now = http.post("/api/v1/admin/gc", json={"grace_s": 0})
        assert now.status_code == 200, now.text
    assert [b["digest"][7:] for b in now.json()["collected"]] == [young.name]
    assert not young.exists() and all(path.exists() for path in used)
    _still_serves(server)


def test_the_server_collects_on_its_own_every_interval(tmp_path: Path) -> None:
    running = _start(tmp_path / "home", "1")
    try:
        plant = Planted(running)
        young = plant.blob(b"a push in progress", modified=None)
        lost = plant.blob(b"left by a crash", modified=LONG_AGO)
        deadline = time.monotonic() + 60
        while lost.exists():
            assert time.monotonic() < deadline, "no periodic pass deleted the orphan"
            time.sleep(0.2)
        assert young.exists()  # the same pass saw it, and kept it
    finally:
        running.stop()
