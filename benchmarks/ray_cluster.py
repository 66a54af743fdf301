"""iris through maas on a simulated Ray cluster against one maas process, same run.

Starts a Ray cluster of a head and two worker nodes on 127.0.0.1 (``ray.cluster_utils``,
the nodes are processes of this machine), then two ``maas serve --demo`` servers: one
alone (iris in its shared worker process, the default), one with ``--ray ADDRESS``
(iris as two Ray actors, one per worker node, behind the same gateway and batcher).
wrk drives each at 1, 8 and 32 connections; the table gives req/s, p50/p99 and the
ratio of the Ray server to the single process.

On one machine every node shares its cores with the gateway and wrk, so this measures
the cost of the actor hop (the gateway's Ray task submission, the object transfer, the
actor's event loop), not the gain of more machines. The issue's target: at least 80 %
of single-process throughput at 8 connections.

    python benchmarks/ray_cluster.py              # 5 s per point
    python benchmarks/ray_cluster.py --seconds 10
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

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
def ray_cluster() -> Iterator[str]:
    """A head and two workers of 2 logical CPUs each on loopback; yields its address."""
    os.environ.update(_ENV)
    from ray.cluster_utils import Cluster

    node = {"num_cpus": 2, "object_store_memory": 80 * 1024 * 1024, "node_ip_address": "127.0.0.1"}
    cluster = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
    try:
        for _ in range(2):
            cluster.add_node(**node)
        cluster.wait_for_nodes()
        yield str(cluster.address)
    finally:
        cluster.shutdown()


@contextlib.contextmanager
def server(*args: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """``maas serve --demo --no-auth`` on a free port until ready; yields its URL."""
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
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
        shutil.rmtree(home, ignore_errors=True)


def _ready(url: str) -> bool:
    """Whether the server answers ready (it prints its address before it listens)."""
    try:
        return httpx.get(f"{url}/v2/health/ready").status_code == 200
    except httpx.TransportError:
        return False


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


def wrk(url: str, connections: int, seconds: float, script: Path) -> tuple[float, float, float]:
    """req/s, p50 ms and p99 ms of wrk at ``connections`` against iris."""
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", "-s", str(script)]
    out = subprocess.run(
        [*command, f"{url}/v2/models/iris/infer"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    if "Non-2xx" in out:
        raise RuntimeError(f"errors under load:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    latency = {p: float(v) * _SCALE[unit] for p, v, unit in _LATENCY.findall(out)}
    return rps, latency["50"], latency["99"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", default="1,8,32")
    args = parser.parse_args()
    connections = [int(c) for c in args.connections.split(",")]
    script = Path(tempfile.mkdtemp(prefix="maas-raybench-wrk-")) / "post.lua"
    script.write_text(_LUA)
    results: dict[str, dict[int, tuple[float, float, float]]] = {}
    with ray_cluster() as address:
        for case, extra in (("one process", []), ("ray (2 actors)", ["--ray", address])):
            with server(*extra) as url:
                status = instances(url, 2 if extra else 1)
                print(f"{case}: iris on {status['workers']}, pids {status['pids']}", flush=True)
                wrk(url, 8, 1.0, script)  # warm-up
                results[case] = {c: wrk(url, c, args.seconds, script) for c in connections}
    print("\n| case | conns | req/s | p50 ms | p99 ms | vs one process |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    base = results["one process"]
    for case, points in results.items():
        for c, (rps, p50, p99) in points.items():
            ratio = f"{rps / base[c][0]:.0%}" if case != "one process" else ""
            print(f"| {case} | {c} | {rps:,.0f} | {p50:.2f} | {p99:.2f} | {ratio} |")


if __name__ == "__main__":
    main()
