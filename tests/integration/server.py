"""A real ``maas serve`` in a subprocess, on a port it picks and prints itself."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import tritonclient.http as triton_http

from tests.conftest import TEST_ADMIN_KEY
from tests.forked import ForkedProcess, can_fork, run_maas

__all__ = ["ALL_DEMO", "IRIS_DEMO", "TEST_ADMIN_KEY", "RunningServer", "cli", "start_server"]

_LISTENING = "maas listening on "

#: The demo models a test server registers unless a test asks for others: the language
#: models cost seconds and hundreds of MB per server, so only their own tests load them.
IRIS_DEMO = '["iris", "iris-onnx"]'
ALL_DEMO = '["iris", "iris-onnx", "smollm2", "minilm"]'


class RunningServer:
    def __init__(
        self,
        process: subprocess.Popen[str] | ForkedProcess,
        url: str,
        home: Path,
        api_key: str | None,
    ) -> None:
        self.process = process
        self.url = url
        self.home = home
        self.api_key = api_key
        self.output: list[str] = []

    @property
    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    @property
    def hostport(self) -> str:
        return self.url.split("://", 1)[1]

    def client(self, **kwargs: object) -> httpx.Client:
        """httpx with the admin key; pass ``headers={}`` for a caller without one."""
        kwargs.setdefault("headers", self.auth_headers)
        kwargs.setdefault("timeout", 30)
        return httpx.Client(base_url=self.url, **kwargs)  # type: ignore[arg-type]

    def triton(self) -> triton_http.InferenceServerClient:
        """tritonclient with the admin key on every call (a tritonclient plugin)."""
        client = triton_http.InferenceServerClient(self.hostport)
        client.register_plugin(_BearerPlugin(self.api_key or ""))
        return client

    def stop(self, timeout_s: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        return code


class _BearerPlugin:
    def __init__(self, key: str) -> None:
        self.key = key

    def __call__(self, request: Any) -> None:
        if self.key:
            request.headers["Authorization"] = f"Bearer {self.key}"


def cli(
    server: RunningServer, *args: str, key: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``maas --url SERVER ARGS`` with the admin key (or ``key``), as a user runs it."""
    env = {**os.environ, "COLUMNS": "200", "MAAS_API_KEY": key or server.api_key or ""}
    return run_maas(["--url", server.url, *args], env, timeout=timeout)


def _pump(stream: object, lines: queue.Queue[str], sink: list[str]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        sink.append(line)
        lines.put(line)


def start_server(
    home: Path,
    *args: str,
    env: dict[str, str] | None = None,
    wait_ready: bool = True,
    timeout_s: float = 90,
    fresh_interpreter: bool = False,
) -> RunningServer:
    """Start ``python -m maas serve --port 0`` and wait for its address and readiness:
    forked from an interpreter that imported maas already (``tests/forked.py``), or a new
    interpreter for tests of the process start itself (``fresh_interpreter``) and where
    the environment asks for what a library decides as it is imported."""
    argv: Sequence[str] = ["serve", "--port", "0", "--home", str(home), *args]
    full_env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "COLUMNS": "200",
        "MAAS_ADMIN_KEY": TEST_ADMIN_KEY,
        "MAAS_DEMO_MODELS": IRIS_DEMO,
        # No listener grace after SIGTERM: stopping a test server need not wait for
        # load balancers; the drain tests set it themselves.
        "MAAS_SERVING__DRAIN_GRACE_S": "0",
        **(env or {}),
    }
    process: subprocess.Popen[str] | ForkedProcess
    if fresh_interpreter or not can_fork(full_env):
        process = subprocess.Popen(
            [sys.executable, "-m", "maas", *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=full_env,
        )
    else:
        process = ForkedProcess(argv, full_env)
    lines: queue.Queue[str] = queue.Queue()
    output: list[str] = []
    threading.Thread(target=_pump, args=(process.stdout, lines, output), daemon=True).start()
    deadline = time.monotonic() + timeout_s
    url = None
    while url is None:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or process.poll() is not None:
            process.kill()
            raise RuntimeError("server did not start:\n" + "".join(output))
        try:
            line = lines.get(timeout=min(remaining, 0.5))
        except queue.Empty:
            continue
        if _LISTENING in line:
            url = line.split(_LISTENING, 1)[1].strip()
    api_key = full_env.get("MAAS_ADMIN_KEY") or None
    if "--no-auth" in args:
        api_key = None
    server = RunningServer(process, url, home, api_key)
    server.output = output
    if wait_ready:
        _wait_ready(server, deadline)
    return server


def _wait_ready(server: RunningServer, deadline: float) -> None:
    with server.client() as http:
        while time.monotonic() < deadline:
            try:
                if http.get("/v2/health/ready").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
    server.stop()
    raise RuntimeError("server never became ready:\n" + "".join(server.output))
