"""iris through maas on a simulated Ray cluster against one maas process, same run.

Starts a Ray cluster of a head and two worker nodes on 127.0.0.1 (``ray.cluster_utils``,
the nodes are processes of this machine), then two ``maas serve --demo`` servers: one
alone (iris in its shared worker process, the default), one with ``--ray ADDRESS``
(iris as two Ray actors, one per worker node, behind the same gateway and batcher).
wrk drives each at 1, 8 and 32 connections; the table gives req/s, p50/p99 and the
ratio of the Ray server to the single process.

On one machine every node shares its cores with the gateway and wrk, so this measures
the cost of the hop to the replicas (each replica's socket, and the Ray worker process
around the model), not the gain of more machines. The issue's target: at least 80 %
of single-process throughput at 8 connections.

    python benchmarks/ray_cluster.py              # 5 s per point
    python benchmarks/ray_cluster.py --seconds 10
    python benchmarks/ray_cluster.py --failures   # also: kill -9 a replica, then lose a node

``--failures`` then drives the Ray server with 8 callers (httpx, 30 s timeout) twice:
once killing one replica's process (``kill -9``) two seconds in, once removing the
worker node that holds a replica, each run lasting ``--failure-seconds`` past the
strike. It prints the requests answered, those that failed (with their status and
code) and how long until the deployment had all its replicas live again. The issue's
target: 0 failed (Ray Serve lost 1 in the same test).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

_BODY = json.dumps(
    {
        "inputs": [
            {"name": "input", "shape": [1, 4], "datatype": "FP64", "data": [5.1, 3.5, 1.4, 0.2]}
        ]
    }
)
_LUA = f"""wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [[{_BODY}]]
"""
_LISTENING = "maas listening on "
_LATENCY = re.compile(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", re.MULTILINE)
_SCALE = {"us": 1e-3, "ms": 1.0, "s": 1e3}
_ENV = {
    # Ray keeps 127.0.0.1 as given (else it swaps in the machine's address).
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "MAAS_DEMO_MODELS": '["iris"]',
    "MAAS_SERVING__DRAIN_GRACE_S": "0",
    "PYTHONUNBUFFERED": "1",
}


@contextlib.contextmanager
def ray_cluster() -> Iterator[Any]:
    """A head and two workers of 2 logical CPUs each on loopback; yields the cluster."""
    os.environ.update(_ENV)
    from ray.cluster_utils import Cluster

    node = {"num_cpus": 2, "object_store_memory": 80 * 1024 * 1024, "node_ip_address": "127.0.0.1"}
    cluster = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
    try:
        for _ in range(2):
            cluster.add_node(**node)
        cluster.wait_for_nodes()
        yield cluster
    finally:
        cluster.shutdown()


SERVER_PIDS: dict[str, int] = {}


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/v2/health/ready").status_code == 200
    except httpx.ConnectError:  # the log line can come just before the socket listens
        return False


_TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    """CPU seconds (user and system) a process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * _TICK_S


def descendants_cpu_s() -> dict[int, float]:
    """CPU seconds of every process below this one: the Ray nodes (GCS, raylets and
    their workers, replicas included) and the servers this script started."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError):  # gone meanwhile
            continue
    found, frontier = {}, [os.getpid()]
    while frontier:
        parent = frontier.pop()
        for pid, ppid in parents.items():
            if ppid == parent and pid not in found:
                with contextlib.suppress(OSError):
                    found[pid] = cpu_s(pid)
                    frontier.append(pid)
    return found


def pss_mb(pid: int) -> float:
    """Proportional set size: shared pages counted once across the processes."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cost(url: str, replicas: list[int], connections: int, seconds: float, script: Path) -> str:
    """One wrk run with the CPU it cost per request, split between the gateway, the
    replicas, and the rest of the cluster (GCS, raylets, Ray's other workers)."""
    gateway = SERVER_PIDS[url]
    before = descendants_cpu_s()
    out = _run_wrk(url, connections, seconds, script)
    after = descendants_cpu_s()
    spent = {pid: after[pid] - before[pid] for pid in before.keys() & after.keys()}
    per = 1e6 / max(_completed(out), 1)
    on_replicas = sum(spent.get(pid, 0.0) for pid in replicas)
    rest = sum(spent.values()) - spent.get(gateway, 0.0) - on_replicas
    memory = ", ".join(f"{pss_mb(pid):.0f}" for pid in replicas)
    return (
        f"at {connections} connections, CPU per request: gateway "
        f"{spent.get(gateway, 0.0) * per:.0f} µs, replicas {on_replicas * per:.0f} µs, "
        f"rest of the cluster {rest * per:.0f} µs; memory (PSS): gateway "
        f"{pss_mb(gateway):.0f} MB, replicas {memory} MB"
    )


@contextlib.contextmanager
def server(*args: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """``maas serve --demo --no-auth`` on a free port until ready; yields its URL (and
    records the server's pid in ``SERVER_PIDS`` under that URL)."""
    home = Path(tempfile.mkdtemp(prefix="maas-raybench-"))
    log = home / "server.log"
    command = [sys.executable, "-m", "maas", "serve", "--port", "0", "--home", str(home)]
    with log.open("w") as output:
        process = subprocess.Popen(
            [*command, "--demo", "--no-auth", *args],
            stdout=output,
            stderr=subprocess.STDOUT,
            env={**os.environ, **_ENV, **(env or {})},
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 180
        url = None
        while url is None or not _ready(url):
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"the server never became ready:\n{log.read_text()}")
            time.sleep(0.5)
            if url is None and _LISTENING in (text := log.read_text()):
                url = text.split(_LISTENING, 1)[1].split()[0]
        SERVER_PIDS[url] = process.pid
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
        shutil.rmtree(home, ignore_errors=True)


def instances(url: str, count: int) -> dict[str, object]:
    """Serve iris:1 with ``count`` instances and batching; its deployment status after."""
    spec = {"instances": count, "max_batch_size": 16, "max_queue_delay_us": 200}
    base = f"{url}/api/v1/models/iris/versions/1/deployment"
    httpx.put(base, json=spec, timeout=120).raise_for_status()
    deadline = time.monotonic() + 120
    while True:
        status: dict[str, object] = httpx.get(f"{base}/status").json()
        if status.get("ready") and status.get("instances") == count:
            return status
        if time.monotonic() > deadline:
            raise RuntimeError(f"iris never became ready: {status}")
        time.sleep(0.5)


def _run_wrk(url: str, connections: int, seconds: float, script: Path) -> str:
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", "-s", str(script)]
    return subprocess.run(
        [*command, f"{url}/v2/models/iris/infer"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def wrk(url: str, connections: int, seconds: float, script: Path) -> tuple[float, float, float]:
    """req/s, p50 ms and p99 ms of wrk at ``connections`` against iris."""
    out = _run_wrk(url, connections, seconds, script)
    if "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"errors under load:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    latency = {p: float(v) * _SCALE[unit] for p, v, unit in _LATENCY.findall(out)}
    return rps, latency["50"], latency["99"]


def _completed(out: str) -> int:
    """Requests wrk completed."""
    return int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]


class _Callers:
    """Eight clients calling iris in a loop (30 s timeout, as a patient client waits),
    keeping what every failed call got: its status and error code, or the exception."""

    def __init__(self, url: str, connections: int = 8) -> None:
        self._url = url
        self._stop = threading.Event()
        self.ok = 0
        self.failed: list[str] = []
        self.slowest_s = 0.0
        self._threads = [
            threading.Thread(target=self._call, daemon=True) for _ in range(connections)
        ]
        for thread in self._threads:
            thread.start()

    def _call(self) -> None:
        with httpx.Client(base_url=self._url, timeout=30) as http:
            while not self._stop.is_set():
                started = time.perf_counter()
                try:
                    response = http.post("/v2/models/iris/infer", content=_BODY)
                except httpx.HTTPError as exc:
                    self.failed.append(type(exc).__name__)
                    continue
                finally:
                    self.slowest_s = max(self.slowest_s, time.perf_counter() - started)
                if response.status_code == 200:
                    self.ok += 1
                else:
                    self.failed.append(f"{response.status_code} {response.json().get('code')}")

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()


def under_failure(
    url: str, seconds: float, strike: Callable[[dict[str, Any]], None]
) -> tuple[int, list[str], float, float]:
    """Eight callers while ``strike`` hurts the deployment two seconds in: requests
    answered, the failures, the slowest call's seconds, and seconds from the strike
    until both replicas were live again (on their new pids or nodes)."""
    base = f"{url}/api/v1/models/iris/versions/1/deployment/status"
    before: dict[str, Any] = httpx.get(base).json()
    callers = _Callers(url)
    time.sleep(2.0)
    struck = time.monotonic()
    strike(before)
    restored: float | None = None
    while restored is None or time.monotonic() - struck < seconds:
        status = httpx.get(base).json()
        if restored is None and len(status["pids"]) == 2 and status["pids"] != before["pids"]:
            restored = time.monotonic() - struck
        if restored is None and time.monotonic() - struck > 120:
            raise RuntimeError(f"the replicas never came back: {status}")
        time.sleep(0.1)
    callers.stop()
    return callers.ok + len(callers.failed), callers.failed, callers.slowest_s, restored


def failures(cluster: Any, seconds: float) -> None:
    """The Ray server under load, losing a replica's process and then a whole node."""
    with server("--ray", cluster.address) as url:
        instances(url, 2)

        def kill_replica(before: dict[str, Any]) -> None:
            os.kill(before["pids"][0], signal.SIGKILL)

        def lose_node(before: dict[str, Any]) -> None:
            victim = next(n for n in cluster.worker_nodes if n.node_id in before["nodes"])
            cluster.remove_node(victim)

        rows = []
        for what, strike in (("kill -9 of a replica", kill_replica), ("a node removed", lose_node)):
            rows.append((what, *under_failure(url, seconds, strike)))
    print(
        "\n| failure (8 callers) | requests | failed | slowest call "
        "| replicas all live again after |"
    )
    print("| --- | ---: | ---: | ---: | ---: |")
    for what, total, failed, slowest, restored in rows:
        print(f"| {what} | {total:,} | {len(failed)} | {slowest:.2f} s | {restored:.1f} s |")
    for what, _, failed, _, _ in rows:
        if failed:
            print(f"{what}: failures {dict(collections.Counter(failed))}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", default="1,8,32")
    parser.add_argument("--failures", action="store_true", help="kill a replica, lose a node")
    parser.add_argument("--failure-seconds", type=float, default=12.0)
    parser.add_argument("--no-throughput", action="store_true", help="only --failures")
    args = parser.parse_args()
    connections = [int(c) for c in args.connections.split(",")]
    script = Path(tempfile.mkdtemp(prefix="maas-raybench-wrk-")) / "post.lua"
    script.write_text(_LUA)
    results: dict[str, dict[int, tuple[float, float, float]]] = {}
    with ray_cluster() as cluster:
        cases = (
            []
            if args.no_throughput
            else [("one process", []), ("ray (2 actors)", ["--ray", cluster.address])]
        )
        for case, extra in cases:
            with server(*extra) as url:
                status = instances(url, 2 if extra else 1)
                print(f"{case}: iris on {status['workers']}, pids {status['pids']}", flush=True)
                wrk(url, 8, 1.0, script)  # warm-up
                results[case] = {c: wrk(url, c, args.seconds, script) for c in connections}
                pids: list[int] = status["pids"]  # type: ignore[assignment]
                replicas = [pid for pid in pids if pid != SERVER_PIDS[url]]
                print(f"{case}: {cost(url, replicas, 32, args.seconds, script)}", flush=True)
        if args.failures:
            failures(cluster, args.failure_seconds)
    if not results:
        return
    print("\n| case | conns | req/s | p50 ms | p99 ms | vs one process |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    base = results["one process"]
    for case, points in results.items():
        for c, (rps, p50, p99) in points.items():
            ratio = f"{rps / base[c][0]:.0%}" if case != "one process" else ""
            print(f"| {case} | {c} | {rps:,.0f} | {p50:.2f} | {p99:.2f} | {ratio} |")


if __name__ == "__main__":
    main()
