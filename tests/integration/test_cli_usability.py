"""What a new user meets first: the ``maas`` command's own messages, help and options."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import maas


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
