"""What a new user meets first: the ``maas`` command's own messages, help and options."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

import maas
import maas.errors
from maas.client import Client
from tests.integration.jobs_helpers import wait_until
from tests.integration.server import RunningServer, start_server
from tests.integration.tls import self_signed
from tests.jobs_data import tickets_csv


def _maas(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "maas", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )


def test_a_port_in_use_is_one_line_saying_which_and_what_to_do(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ran = _maas("serve", "--port", str(port), "--home", str(tmp_path / "home"))
    said = (ran.stdout + ran.stderr).strip()
    assert ran.returncode != 0
    assert "Traceback" not in said, said
    lines = said.splitlines()
    assert len(lines) == 1, said
    assert f"127.0.0.1:{port}" in lines[0] and "in use" in lines[0] and "--port" in lines[0]


def test_version_and_help_that_reads_well() -> None:
    version = _maas("--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"maas {maas.__version__}"
    helped = _maas("serve", "--help")
    assert helped.returncode == 0, helped.stderr
    assert "--demo" in helped.stdout and "<bool>" not in helped.stdout, helped.stdout
    assert "Log level [info]" in helped.stdout, helped.stdout  # not eaten as rich markup
    assert "<bool>" not in _maas("jobs", "submit", "--help").stdout


# -- the SDK finds the server and key as the CLI does (item 16) ------------------------


def test_the_sdk_reads_maas_url_and_maas_api_key(
    fresh_server: RunningServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MAAS_URL", fresh_server.url)
    monkeypatch.setenv("MAAS_API_KEY", fresh_server.api_key or "")
    monkeypatch.setenv("MAAS_HOME", str(tmp_path / "no-home"))
    with Client() as client:
        assert client.list_models() == []


def test_the_sdk_reads_the_admin_key_the_server_wrote(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    server = start_server(home, env={"MAAS_ADMIN_KEY": ""}, fresh_interpreter=True)
    try:
        assert (home / "admin.key").exists()
        monkeypatch.delenv("MAAS_API_KEY", raising=False)
        monkeypatch.setenv("MAAS_HOME", str(home))
        with Client(server.url) as client:
            assert client.list_models() == []
    finally:
        server.stop()


def test_the_readme_placeholder_key_is_a_clear_error(fresh_server: RunningServer) -> None:
    with pytest.raises(maas.errors.InvalidInput, match="placeholder"):
        Client(fresh_server.url, api_key="maas_…")
    ran = _maas("--url", fresh_server.url, "--api-key", "maas_…", "models", "list")
    assert ran.returncode == 1 and "Traceback" not in ran.stderr, ran.stderr
    assert "placeholder" in ran.stderr


# -- a server with a self-signed certificate (item 17) -----------------------------------


def _wait_tls(server: RunningServer, cert: Path) -> None:
    """The server prints its address before it listens: wait until TLS answers."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{server.url}/v2/health/ready", verify=str(cert)).raise_for_status()
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise AssertionError("the TLS server never answered:\n" + "".join(server.output))


def test_the_cli_trusts_a_self_signed_server_when_told(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    args = ("--ssl-certfile", str(cert), "--ssl-keyfile", str(key))
    server = start_server(tmp_path / "home", *args, wait_ready=False, fresh_interpreter=True)
    try:
        _wait_tls(server, cert)
        base = ("--url", server.url, "--api-key", server.api_key or "")
        refused = _maas(*base, "models", "list")
        assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stderr
        assert "certificate" in refused.stderr and "--cacert" in refused.stderr, refused.stderr
        for extra, env in [
            (("--cacert", str(cert)), {}),
            ((), {"MAAS_CACERT": str(cert)}),
            (("--insecure",), {}),
            ((), {"MAAS_INSECURE": "1"}),
        ]:
            listed = _maas(*extra, *base, "models", "list", env=env)
            assert listed.returncode == 0, (extra, env, listed.stderr)
    finally:
        server.stop()


# -- ids as the listings show them (item 15) -----------------------------------------------


def _cli_as_admin(server: RunningServer, *args: str) -> subprocess.CompletedProcess[str]:
    return _maas("--url", server.url, "--api-key", server.api_key or "", *args)


def test_keys_take_a_unique_prefix_and_rotate_names_the_new_key(
    fresh_server: RunningServer,
) -> None:
    with fresh_server.client() as http:
        created = [http.post("/api/v1/keys", json={"name": f"k{i}"}).json() for i in range(17)]
    by_first: dict[str, list[str]] = {}
    for key in created:
        by_first.setdefault(key["id"][0], []).append(key["id"])
    shared = next(c for c, ids in by_first.items() if len(ids) > 1)  # 17 keys, 16 hex digits
    ambiguous = _cli_as_admin(fresh_server, "keys", "revoke", shared)
    assert ambiguous.returncode == 1 and "ambiguous_id" in ambiguous.stderr, ambiguous.stderr
    assert "Traceback" not in ambiguous.stderr

    old = created[0]
    rotated = _cli_as_admin(fresh_server, "-o", "json", "keys", "rotate", old["id"][:8])
    assert rotated.returncode == 0, rotated.stderr
    new = json.loads(rotated.stdout)
    assert new["id"] != old["id"] and new["replaces"] == old["id"]
    told = _cli_as_admin(fresh_server, "keys", "rotate", new["id"][:8])
    assert told.returncode == 0 and f"replaces {new['id']}" in told.stdout, told.stdout
    newest = told.stdout.strip().splitlines()[-1]
    with fresh_server.client(headers={"Authorization": f"Bearer {newest}"}) as http:
        assert http.get("/api/v1/models").status_code == 200
    newest_id = next(
        k["id"]
        for k in json.loads(_cli_as_admin(fresh_server, "-o", "json", "keys", "list").stdout)
        if k["name"] == old["name"]
    )
    revoked = _cli_as_admin(fresh_server, "keys", "revoke", newest_id[:6])
    assert revoked.returncode == 0, revoked.stderr
    with fresh_server.client(headers={"Authorization": f"Bearer {newest}"}) as http:
        deadline = time.monotonic() + 10
        while http.get("/api/v1/models").status_code != 401:
            assert time.monotonic() < deadline, "the revoked key still works"
            time.sleep(0.2)
    unknown = _cli_as_admin(fresh_server, "keys", "revoke", "zz%")
    assert unknown.returncode == 1 and "key_not_found" in unknown.stderr, unknown.stderr


def test_jobs_take_a_unique_prefix(fresh_server: RunningServer, tmp_path: Path) -> None:
    with Client(fresh_server.url, api_key=fresh_server.api_key) as client:
        client.push_dataset(tickets_csv(tmp_path / "tickets.csv", n=60), "tickets")
        job = client.submit_job(
            "kind: train\nmodel: tickets\ndataset: tickets\ntask: text_classification\n"
            "target: label\ntext_column: text\n"
        )
        assert wait_until(client, job.id, lambda j: j.finished).state == "succeeded"
    prefix = job.id[:8]
    shown = _cli_as_admin(fresh_server, "-o", "json", "jobs", "show", prefix)
    assert shown.returncode == 0 and json.loads(shown.stdout)["id"] == job.id, shown.stderr
    followed = _cli_as_admin(fresh_server, "jobs", "logs", "--follow", prefix)
    assert followed.returncode == 0 and f"job {job.id} succeeded" in followed.stdout, (
        followed.stdout + followed.stderr
    )
    logged = _cli_as_admin(fresh_server, "jobs", "logs", prefix)
    assert logged.returncode == 0 and "state: succeeded" in logged.stdout, logged.stderr
