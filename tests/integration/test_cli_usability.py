"""What a new user meets first: the ``maas`` command's own messages, help and options."""

from __future__ import annotations

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
from tests.integration.server import RunningServer, start_server
from tests.integration.tls import self_signed


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
    server = start_server(home, env={"MAAS_ADMIN_KEY": ""})
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
    server = start_server(tmp_path / "home", *args, wait_ready=False)
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
