"""The idle memory of ``maas serve --demo``: the server process and its worker processes.

    python benchmarks/idle_memory.py             # one fresh home, 5 s settle
    python benchmarks/idle_memory.py --runs 3 --settle 10
    MAAS_DEMO_MODELS='["iris"]' python benchmarks/idle_memory.py --restart  # iris only

``--restart`` measures a second start on the same home: a restart finds the demo
registered and trains nothing, which is what a server spends its life as.

Starts ``python -m maas serve --demo --home <fresh temp dir> --port <free>``, waits until
``/v2/health/ready`` answers 200, waits ``--settle`` seconds more, then reads from
``/proc`` the RSS (``VmRSS``) and PSS (``smaps_rollup``) of the server process and of
every process below it (the spawned model workers). RSS counts shared pages (libraries,
the interpreter) once per process, so the RSS total overstates what the tree takes; the
PSS total splits shared pages between the processes that map them.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from readiness import wait_ready


@dataclass
class Start:
    """Seconds from the process's start until it answered live, and ready."""

    live_s: float
    ready_s: float


@dataclass
class Usage:
    pid: int
    command: str
    rss_kib: int
    pss_kib: int


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def descendants(pid: int) -> list[int]:
    tree, found, todo = _children(), [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(tree.get(current, []))
    return found


def _kib(path: Path, field: str) -> int:
    for line in path.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def usage(pid: int) -> Usage:
    proc = Path("/proc") / str(pid)
    command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    return Usage(pid, command, _kib(proc / "status", "VmRSS"), _kib(proc / "smaps_rollup", "Pss"))


def measure(settle: float, extra: list[str], *, restart: bool) -> tuple[Start, list[Usage]]:
    """A server on a fresh home (started twice with ``restart``): the usage of its
    process tree once idle, the server first."""
    with tempfile.TemporaryDirectory(prefix="maas-idle-") as home:
        if restart:
            _measure_once(home, 0.0, extra)
        return _measure_once(home, settle, extra)


def _measure_once(home: str, settle: float, extra: list[str]) -> tuple[Start, list[Usage]]:
    port = free_port()
    base = f"http://127.0.0.1:{port}/v2/health"
    command = [sys.executable, "-m", "maas", "serve", "--demo", "--home", home]
    command += ["--port", str(port), "--log-level", "warning", *extra]
    log = Path(home) / "server.log"
    # An installed maas has its bytecode compiled; a checkout run with
    # PYTHONDONTWRITEBYTECODE (some images set it) would compile maas at every start.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    started = time.monotonic()
    with log.open("w") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )
    try:
        wait_ready(process, f"{base}/live", log, interval_s=0.02)
        live_s = time.monotonic() - started
        wait_ready(process, f"{base}/ready", log, interval_s=0.02)
        start = Start(live_s, time.monotonic() - started)
        time.sleep(settle)
        found = []
        for pid in descendants(process.pid):
            with contextlib.suppress(OSError):  # gone meanwhile
                found.append(usage(pid))
        return start, found
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settle", type=float, default=5.0, help="seconds idle after ready")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--no-auth", action="store_true", help="pass --no-auth to the server")
    parser.add_argument("--restart", action="store_true", help="measure a second start")
    args = parser.parse_args()
    extra = ["--no-auth"] if args.no_auth else []
    for run in range(1, args.runs + 1):
        start, found = measure(args.settle, extra, restart=args.restart)
        print(f"run {run}: {len(found)} processes, {args.settle:g} s idle after ready")
        print(f"live {start.live_s:.2f} s and ready {start.ready_s:.2f} s after the start")
        print("| pid | role | RSS MiB | PSS MiB | command |")
        print("| ---: | --- | ---: | ---: | --- |")
        for i, u in enumerate(found):
            role = "server" if i == 0 else "child"
            print(
                f"| {u.pid} | {role} | {u.rss_kib / 1024:.1f} | {u.pss_kib / 1024:.1f} "
                f"| {u.command[:90]} |"
            )
        rss = sum(u.rss_kib for u in found) / 1024
        pss = sum(u.pss_kib for u in found) / 1024
        print(
            f"server {found[0].rss_kib / 1024:.1f} MiB RSS; "
            f"total {rss:.1f} MiB RSS, {pss:.1f} MiB PSS\n"
        )


if __name__ == "__main__":
    main()
