"""maas against MLServer and against itself, over HTTP, with ratios; never a CI gate.

    python benchmarks/run.py            # 10 s per point
    python benchmarks/run.py --quick    # a smoke run: 2 s per point, 1 and 16 connections

Installs what it compares against first: MLServer (``mlserver``, ``mlserver-sklearn``)
into ``benchmarks/.venv-mlserver``, and wrk from Debian when absent. Each server runs
pinned to core 0 (``taskset -c 0``, its worker processes included); wrk drives it from
core 1 with one thread. Reported: requests/s, p50 and p99 at 1, 16 and 64 connections
for iris (maas vs MLServer, V2 JSON; maas with an API key vs ``--no-auth``) and the
digits MLP (scikit-learn and ONNX in maas, batching off and on), with the in-process
ceilings of each model measured in the same run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from h2load import GRPC_INFER_PATH, ensure_h2load, grpc_infer_body, h2load
from models import BenchModel, build_models
from readiness import wait_ready

HERE = Path(__file__).parent
MLSERVER_VENV = HERE / ".venv-mlserver"
ADMIN_KEY = "maas_benchmk_" + "0123456789abcdef" * 2
BATCHING = {"max_batch_size": 32, "max_queue_delay_us": 2000}
_LUA = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
{auth}wrk.body = [[{body}]]
"""


@dataclass
class Point:
    case: str
    connections: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    other_cpu: float  # CPU of everything but the server and wrk, in cores, during the point
    cpu_us: float  # CPU of the server's process group per request, in microseconds


# -- setup -------------------------------------------------------------------------


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    subprocess.run(["apt-get", "update", "-q"], check=True)
    subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=True)
    return shutil.which("wrk") or "wrk"


def ensure_mlserver() -> Path:
    """MLServer in a venv of its own, with the scikit-learn that wrote the model.

    uvloop is held below 0.22: MLServer 1.7's inference workers call
    ``asyncio.get_event_loop()`` where uvloop 0.22 raises, and every model load fails.
    """
    import sklearn

    binary = MLSERVER_VENV / "bin" / "mlserver"
    if not binary.exists():
        subprocess.run([sys.executable, "-m", "venv", str(MLSERVER_VENV)], check=True)
        packages = [
            "mlserver",
            "mlserver-sklearn",
            "uvloop<0.22",
            f"scikit-learn=={sklearn.__version__}",
        ]
        pip = MLSERVER_VENV / "bin" / "pip"
        subprocess.run([str(pip), "install", "-q", *packages], check=True)
    return binary


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# -- servers -------------------------------------------------------------------------


@contextmanager
def running(
    command: Sequence[str], env: dict[str, str], log: Path, ready_url: str
) -> Iterator[int]:
    """A server pinned to core 0, until the block ends; yields its process group."""
    with log.open("w") as out:
        process = subprocess.Popen(
            ["taskset", "-c", "0", *command],
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_ready(process, ready_url, log)
        yield process.pid
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def maas_command(port: int, home: Path, *, no_auth: bool) -> list[str]:
    command = [sys.executable, "-m", "maas", "serve", "--port", str(port), "--home", str(home)]
    return [*command, "--no-auth"] if no_auth else command


def push(url: str, model: BenchModel, headers: dict[str, str]) -> int:
    response = httpx.post(
        f"{url}/api/v1/models/{model.name}/versions",
        params={"filename": model.artifact.name},
        content=model.artifact.read_bytes(),
        headers=headers,
        timeout=120,
    )
    response.raise_for_status()
    version: int = response.json()["version"]
    infer = f"{url}/v2/models/{model.name}/infer"
    # The first call may wait for a worker process to start and load (seconds).
    httpx.post(infer, content=model.body(), headers=headers, timeout=120).raise_for_status()
    return version


def set_batching(url: str, model: BenchModel, version: int) -> bool:
    """Turn batching on; False when this server has no deployment endpoint."""
    path = f"{url}/api/v1/models/{model.name}/versions/{version}/deployment"
    response = httpx.put(path, json=BATCHING, timeout=60)
    if response.status_code in (404, 405):
        return False
    response.raise_for_status()
    infer = f"{url}/v2/models/{model.name}/infer"
    httpx.post(infer, content=model.body(), timeout=120).raise_for_status()
    return True


#: Rows per batch in the batched settings of both servers: as many as the connections
#: of the c=16 point can have waiting at once.
BATCH_ROWS = 16
#: MLServer's adaptive batching waits up to this for a batch to fill (it needs a time;
#: its documentation's example waits 0.5 s).
MLSERVER_BATCH_TIME_S = 0.001


def mlserver_repository(
    directory: Path, joblib_path: Path, port: int, parallel_workers: int | None, batched: bool
) -> Path:
    """An MLServer model repository serving iris; ``parallel_workers`` None keeps its
    default (one inference worker process), 0 runs the model in the server process;
    ``batched`` turns on its adaptive batching."""
    model_dir = directory / "iris"
    model_dir.mkdir(parents=True)
    shutil.copy(joblib_path, model_dir / "model.joblib")
    settings: dict[str, Any] = {"name": "iris", "implementation": "mlserver_sklearn.SKLearnModel"}
    settings["parameters"] = {"uri": "./model.joblib", "version": "v1"}
    if batched:
        settings["max_batch_size"] = BATCH_ROWS
        settings["max_batch_time"] = MLSERVER_BATCH_TIME_S
    (model_dir / "model-settings.json").write_text(json.dumps(settings))
    server = {"http_port": port, "grpc_port": free_port(), "metrics_port": free_port()}
    if parallel_workers is not None:
        server["parallel_workers"] = parallel_workers
    (directory / "settings.json").write_text(json.dumps(server))
    return directory


# -- load ----------------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def _busy_seconds() -> float:
    """CPU seconds all cores have spent busy since boot (/proc/stat, less idle and iowait)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / _TICK


def _group_seconds(group: int) -> float:
    """CPU seconds used so far by the live processes of a process group."""
    total = 0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[2]) == group:
                total += int(stat[11]) + int(stat[12])
    return total / _TICK


def _children_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _sample(server: int) -> tuple[float, float, float, float]:
    return time.monotonic(), _busy_seconds(), _group_seconds(server), _children_seconds()


def _usage_since(
    before: tuple[float, float, float, float], server: int
) -> tuple[float, float, float]:
    """Wall seconds, the server's CPU seconds and the disturbance (the CPU everything but
    the server and the load generator, a child of ours, used, in cores) since ``before``."""
    wall, busy, ours, driver = (b - a for a, b in zip(before, _sample(server), strict=True))
    return wall, ours, max(0.0, busy - ours - driver) / wall


_LATENCY = re.compile(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", re.MULTILINE)
_SCALE = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def drive(
    wrk: str,
    url: str,
    body: bytes,
    connections: int,
    seconds: float,
    scripts: Path,
    auth: bool,
    server: int,
) -> tuple[float, float, float, int, float, float]:
    """wrk on core 1: requests/s, p50 ms, p99 ms, non-2xx count, the disturbance, and
    the server's CPU per request.

    The disturbance is the CPU that everything but the server (process group ``server``)
    and wrk used meanwhile, in cores: the other users of this shared machine. The
    server's CPU per request (its process group, worker processes included) is the
    steadiest number on a shared machine: it counts the work, not the waiting.
    """
    script = scripts / f"post-{abs(hash((body, auth)))}.lua"
    header = f'wrk.headers["Authorization"] = "Bearer {ADMIN_KEY}"\n' if auth else ""
    script.write_text(_LUA.format(auth=header, body=body.decode()))
    command = ["taskset", "-c", "1", wrk, "-t1", f"-c{connections}", f"-d{seconds:g}s"]
    before = _sample(server)
    out = subprocess.run(
        [*command, "--latency", "-s", str(script), url], capture_output=True, text=True, check=True
    ).stdout
    wall, ours, other = _usage_since(before, server)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    latency = {p: float(v) * _SCALE[unit] for p, v, unit in _LATENCY.findall(out)}
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    cpu_us = ours / max(1.0, rps * wall) * 1e6
    non_2xx = int(errors.group(1)) if errors else 0
    return rps, latency["50"], latency["99"], non_2xx, other, cpu_us


def measure_ceilings(models: dict[str, BenchModel], seconds: float) -> dict[str, dict[str, float]]:
    """The in-process ceilings, in a process started on core 0 as the servers are.

    Not in this process pinned afterwards: numpy's OpenBLAS sizes its thread pool when it
    is imported, so here it would run two threads on one core (batch-32 predicts of the
    scikit-learn MLP came out slower per row than batch 1), unlike the servers.
    """
    specs = [{**dataclasses.asdict(m), "artifact": str(m.artifact)} for m in models.values()]
    out = subprocess.run(
        ["taskset", "-c", "0", sys.executable, str(HERE / "models.py"), f"{seconds:g}"],
        input=json.dumps(specs),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    result: dict[str, dict[str, float]] = json.loads(out.splitlines()[-1])
    return result


# -- report --------------------------------------------------------------------------


def table(points: list[Point], refs: dict[str, tuple[str, str]]) -> str:
    """Markdown table; ``refs`` maps a case to (reference case, label of the ratio)."""
    by_key = {(p.case, p.connections): p for p in points}
    lines = [
        "| case | conns | req/s | p50 ms | p99 ms | non-2xx | server CPU µs/req "
        "| other CPU | ratio |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for p in points:
        ratio = ""
        if p.case in refs:
            ref_case, label = refs[p.case]
            ref = by_key.get((ref_case, p.connections))
            if ref is not None and ref.rps:
                ratio = f"{p.rps / ref.rps:.2f}x {label}"
        lines.append(
            f"| {p.case} | {p.connections} | {p.rps:.0f} | {p.p50_ms:.2f} | {p.p99_ms:.2f} "
            f"| {p.errors} | {p.cpu_us:.0f} | {p.other_cpu:.2f} | {ratio} |"
        )
    return "\n".join(lines)


def ceiling_table(values: dict[str, dict[str, float]]) -> str:
    lines = [
        "| model (in process, core 0) | V2 JSON decode+predict+encode req/s "
        "| predict rows/s, batch 1 | predict rows/s, batch 32 |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, v in values.items():
        lines.append(f"| {name} | {v['v2_json']:.0f} | {v['rows_b1']:.0f} | {v['rows_b32']:.0f} |")
    return "\n".join(lines)


# -- the run -------------------------------------------------------------------------


class Bench:
    def __init__(self, wrk: str, work: Path, connections: Sequence[int], seconds: float) -> None:
        self.wrk = wrk
        self.work = work
        self.connections = connections
        self.seconds = seconds
        self.points: list[Point] = []
        self.h2load_binary = ensure_h2load()

    def measure(self, case: str, url: str, body: bytes, server: int, *, auth: bool = False) -> None:
        for connections in self.connections:
            result = drive(self.wrk, url, body, connections, self.seconds, self.work, auth, server)
            self.points.append(Point(case, connections, *result))
            print(
                f"  {case:<24} c={connections:<3} {result[0]:8.0f} req/s"
                f"  p99 {result[2]:7.2f} ms  server {result[5]:5.0f} µs CPU/req"
                f"  (other CPU {result[4]:.2f} cores)",
                flush=True,
            )

    def maas(self, models: dict[str, BenchModel]) -> bool:
        """Every model on a --no-auth maas, batching off then on; False if it could not."""
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        command = maas_command(port, self.work / "home", no_auth=True)
        log = self.work / "maas.log"
        ready = f"{url}/v2/health/ready"
        with running([*command, "--log-level", "warning"], {}, log, ready) as server:
            versions = {name: push(url, model, {}) for name, model in models.items()}
            for name in models:
                case = "iris maas" if name == "iris" else f"{name} unbatched"
                self.measure(case, f"{url}/v2/models/{name}/infer", models[name].body(), server)
            mlps = [name for name in models if name.startswith("mlp")]
            batching = all(set_batching(url, models[n], versions[n]) for n in mlps)
            if batching:
                for name in mlps:
                    path = f"{url}/v2/models/{name}/infer"
                    self.measure(f"{name} batched", path, models[name].body(), server)
        return batching

    def maas_with_key(self, iris: BenchModel) -> None:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        command = [
            *maas_command(port, self.work / "home-key", no_auth=False),
            "--log-level",
            "warning",
        ]
        env = {"MAAS_ADMIN_KEY": ADMIN_KEY}
        with running(command, env, self.work / "maas-key.log", f"{url}/v2/health/ready") as server:
            push(url, iris, {"Authorization": f"Bearer {ADMIN_KEY}"})
            path = f"{url}/v2/models/iris/infer"
            self.measure("iris maas+key", path, iris.body(), server, auth=True)

    def mlserver(
        self,
        binary: Path,
        iris: BenchModel,
        joblib_path: Path,
        parallel_workers: int | None,
        batched: bool = False,
    ) -> None:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        label = "default" if parallel_workers is None else f"parallel_workers={parallel_workers}"
        label += " batched" if batched else ""
        work = self.work / f"mlserver-{label.replace(' ', '-')}"
        repository = mlserver_repository(work, joblib_path, port, parallel_workers, batched)
        command = [str(binary), "start", str(repository)]
        with running(command, {}, work / "mlserver.log", f"{url}/v2/health/ready") as server:
            body = iris.body("input-0", select=False)  # MLServer answers predict alone
            httpx.post(f"{url}/v2/models/iris/infer", content=body, timeout=120).raise_for_status()
            self.measure(f"iris MLServer {label}", f"{url}/v2/models/iris/infer", body, server)

    def maas_transports(self, iris: BenchModel) -> None:
        """iris with auth and metering on, on the server's event loop (``workers:
        inline``, as MLServer's ``parallel_workers: 0``): V2 REST with wrk, then V2 gRPC
        and V2 REST with h2load."""
        port, grpc_port = free_port(), free_port()
        url = f"http://127.0.0.1:{port}"
        command = [
            *maas_command(port, self.work / "home-inline", no_auth=False),
            *("--grpc-port", str(grpc_port), "--log-level", "warning"),
        ]
        env = {"MAAS_ADMIN_KEY": ADMIN_KEY}
        auth = {"Authorization": f"Bearer {ADMIN_KEY}"}
        log = self.work / "maas-inline.log"
        with running(command, env, log, f"{url}/v2/health/ready") as server:
            version = push(url, iris, auth)
            path = f"{url}/api/v1/models/{iris.name}/versions/{version}/deployment"
            response = httpx.put(path, json={"workers": "inline"}, headers=auth, timeout=60)
            response.raise_for_status()
            infer = f"{url}/v2/models/{iris.name}/infer"
            httpx.post(infer, content=iris.body(), headers=auth, timeout=60).raise_for_status()
            self.measure("iris maas+key inline", infer, iris.body(), server, auth=True)
            # Batched: the calls that arrive while one runs go together, with no wait
            # added (a delay of 0: a batch is what queued meanwhile).
            batched = {"workers": "inline", "max_batch_size": BATCH_ROWS, "max_queue_delay_us": 0}
            httpx.put(path, json=batched, headers=auth, timeout=60).raise_for_status()
            httpx.post(infer, content=iris.body(), headers=auth, timeout=60).raise_for_status()
            self.measure("iris maas+key inline batched", infer, iris.body(), server, auth=True)
            httpx.put(path, json={"workers": "inline"}, headers=auth, timeout=60).raise_for_status()
            check_grpc(grpc_port, iris)
            grpc_body = grpc_infer_body(iris.name, iris.input_name, iris.row, iris.outputs or ())
            grpc_url = f"http://127.0.0.1:{grpc_port}{GRPC_INFER_PATH}"
            grpc_headers = {"content-type": "application/grpc", "te": "trailers", **auth}
            rest_headers = {"content-type": "application/json", **auth}
            # Side by side at each connection count, twice, so that a drift of the
            # machine's speed between points falls on both (the best of each is kept).
            for connections in self.connections:
                for _ in range(2):
                    self.measure_h2(
                        "iris maas+key gRPC (h2load)",
                        grpc_url,
                        grpc_body,
                        grpc_headers,
                        server,
                        connections=connections,
                    )
                    self.measure_h2(
                        "iris maas+key REST (h2load)",
                        infer,
                        iris.body(),
                        rest_headers,
                        server,
                        connections=connections,
                        http1=True,
                    )
            self.points = _best_of_each(self.points)

    def measure_h2(
        self,
        case: str,
        url: str,
        body: bytes,
        headers: dict[str, str],
        server: int,
        *,
        connections: int,
        http1: bool = False,
    ) -> None:
        """Like ``measure`` at one connection count, driven by h2load
        (``h2load.h2load`` says why by count)."""
        before = _sample(server)
        result = h2load(
            self.h2load_binary,
            url,
            body,
            connections=connections,
            seconds=self.seconds,
            headers=headers,
            work=self.work,
            http1=http1,
        )
        _, ours, other = _usage_since(before, server)
        cpu_us = ours / max(1, result.done) * 1e6
        r = result
        self.points.append(
            Point(case, connections, r.rps, r.p50_ms, r.p99_ms, r.failed, other, cpu_us)
        )
        print(
            f"  {case:<28} c={connections:<3} {result.rps:8.0f} req/s"
            f"  p99 {result.p99_ms:7.2f} ms  server {cpu_us:5.0f} µs CPU/req",
            flush=True,
        )


def _best_of_each(points: list[Point]) -> list[Point]:
    """One point per (case, connections): the one with the most requests a second, in
    the order the cases first appear."""
    best: dict[tuple[str, int], Point] = {}
    for point in points:
        key = (point.case, point.connections)
        if key not in best or point.rps > best[key].rps:
            best[key] = point
    return list(best.values())


def check_grpc(port: int, iris: BenchModel) -> None:
    """One call with the official Triton gRPC client: the load that follows counts HTTP
    statuses only, and a gRPC failure is an HTTP 200."""
    import numpy as np
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
    tensor = grpcclient.InferInput(iris.input_name, [1, len(iris.row)], "FP64")
    tensor.set_data_from_numpy(np.asarray([iris.row], dtype=np.float64))
    headers = {"authorization": f"Bearer {ADMIN_KEY}"}
    result = client.infer(iris.name, [tensor], headers=headers)
    assert result.as_numpy("predict") is not None
    client.close()


def add_best_mlserver(points: list[Point]) -> None:
    """Per connection count, the fastest of MLServer's settings, as its own rows."""
    for connections in sorted({p.connections for p in points}):
        runs = [
            p
            for p in points
            if p.case.startswith("iris MLServer ") and p.connections == connections
        ]
        if runs:
            top = max(runs, key=lambda p: p.rps)
            points.append(dataclasses.replace(top, case="iris MLServer best"))


def main() -> None:
    parser = argparse.ArgumentParser(description="maas benchmarks (ratios; never a CI gate)")
    parser.add_argument("--seconds", type=float, default=10.0, help="wrk duration per point")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 s, 1 and 16 conns")
    parser.add_argument("--skip-mlserver", action="store_true")
    parser.add_argument(
        "--iris-only", action="store_true", help="only the iris cases (to rerun disturbed ones)"
    )
    args = parser.parse_args()
    seconds = 2.0 if args.quick else args.seconds
    connections = (1, 16) if args.quick else (1, 16, 64)
    wrk = ensure_wrk()
    mlserver = None if args.skip_mlserver else ensure_mlserver()
    work = Path(tempfile.mkdtemp(prefix="maas-bench-"))
    models, joblib_path = build_models(work / "models")
    if args.iris_only:
        models = {"iris": models["iris"]}
    bench = Bench(wrk, work, connections, seconds)
    print(f"work dir {work}; {seconds:g} s per point", flush=True)
    batching = bench.maas(models)
    bench.maas_with_key(models["iris"])
    bench.maas_transports(models["iris"])
    if mlserver is not None:
        for parallel_workers in (None, 0):
            bench.mlserver(mlserver, models["iris"], joblib_path, parallel_workers)
        bench.mlserver(mlserver, models["iris"], joblib_path, 0, batched=True)
        add_best_mlserver(bench.points)
    ceiling = measure_ceilings(models, min(seconds, 3.0))

    best = "iris MLServer best"
    refs = {
        "iris maas": (best, "of MLServer's best"),
        "iris maas+key": (best, "of MLServer's best"),
        "iris maas+key inline": (best, "of MLServer's best"),
        "iris maas+key inline batched": (best, "of MLServer's best"),
        "iris maas+key gRPC (h2load)": ("iris maas+key REST (h2load)", "of REST"),
        "mlp-sklearn batched": ("mlp-sklearn unbatched", "of unbatched"),
        "mlp-onnx batched": ("mlp-onnx unbatched", "of unbatched"),
    }
    print()
    print(table(bench.points, refs))
    print()
    print(ceiling_table(ceiling))
    if not batching:
        print("\nbatching: this server has no deployment endpoint; measured batching off only")
    top = max(connections)
    for case in ("mlp-onnx batched", "mlp-sklearn batched", "mlp-onnx unbatched"):
        point = next((p for p in bench.points if p.case == case and p.connections == top), None)
        if point is not None:
            model = ceiling[case.split()[0]]
            print(
                f"{case} at {top} conns: {point.rps / model['rows_b32']:.0%} of the in-process "
                f"batch-32 ceiling, {point.rps / model['v2_json']:.0%} of the V2 JSON ceiling"
            )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
