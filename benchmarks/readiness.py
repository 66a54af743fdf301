"""Waiting for a server the benchmarks started: one loop for every script."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx

__all__ = ["wait_ready"]


def wait_ready(
    process: subprocess.Popen[bytes],
    ready_url: str,
    log: Path,
    *,
    timeout_s: float = 180,
    interval_s: float = 0.3,
) -> None:
    """Return once ``ready_url`` answers 200; raise with the log's tail if the process
    exits or the time runs out first."""
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the server did not start:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(ready_url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(interval_s)
