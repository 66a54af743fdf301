"""The forked processes of ``tests/forked.py`` answer as new interpreters do: the same
output and exit codes, the environment they are given, Popen's codes for signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.forked import ForkedProcess, can_fork, run_maas
from tests.integration.server import TEST_ADMIN_KEY, start_server
from tests.keys import bearer


def test_a_forked_cli_call_prints_and_exits_as_a_new_interpreter() -> None:
    env = {**os.environ, "COLUMNS": "200"}
    for args in (["--version"], ["models", "list", "--url", "http://127.0.0.1:9"]):
        forked = run_maas(args, env)
        fresh = subprocess.run(
            [sys.executable, "-m", "maas", *args], capture_output=True, text=True, env=env
        )
        assert (forked.returncode, forked.stdout, forked.stderr) == (
            fresh.returncode,
            fresh.stdout,
            fresh.stderr,
        )
    assert run_maas(["models", "list", "--url", "http://127.0.0.1:9"], env).returncode != 0


def test_a_forked_server_has_its_environment_and_popens_return_codes(tmp_path: Path) -> None:
    own_key = "maas_forkfork_" + "fedcba9876543210" * 2
    server = start_server(tmp_path / "home", env={"MAAS_ADMIN_KEY": own_key})
    try:
        assert isinstance(server.process, ForkedProcess)
        with server.client(headers=bearer(own_key)) as http:
            assert http.get("/api/v1/keys").status_code == 200
        with server.client(headers=bearer(TEST_ADMIN_KEY)) as http:
            assert http.get("/api/v1/keys").status_code == 401
        os.kill(server.process.pid, signal.SIGKILL)
        assert server.process.wait(30) == -signal.SIGKILL
    finally:
        server.stop()
    again = start_server(tmp_path / "home", env={"MAAS_ADMIN_KEY": own_key})
    assert again.stop() in (0, -signal.SIGTERM)


def test_an_environment_a_library_reads_at_import_gets_a_new_interpreter() -> None:
    assert can_fork(dict(os.environ))
    assert not can_fork({**os.environ, "PROMETHEUS_MULTIPROC_DIR": "/tmp/prom"})
