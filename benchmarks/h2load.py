"""Load over HTTP/2 with h2load: V2 gRPC ``ModelInfer`` against V2 REST, same driver.

wrk speaks HTTP/1.1 only, so gRPC is driven by nghttp2's h2load (Debian's
``nghttp2-client``), and REST is driven by the same h2load (``--h1``) for the
comparison, so that neither side is measured with a faster client. h2load prints no
percentiles: its ``--log-file`` has one line per request (start, status, duration in
µs), read back here. A gRPC call answers HTTP 200 even when it fails (the failure is in
the ``grpc-status`` trailer), so ``run.py`` checks one call with ``tritonclient.grpc``
before the load.
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["H2Result", "ensure_h2load", "grpc_infer_body", "h2load"]

GRPC_INFER_PATH = "/inference.GRPCInferenceService/ModelInfer"


@dataclass(frozen=True)
class H2Result:
    rps: float
    p50_ms: float
    p99_ms: float
    failed: int  # requests h2load counts as failed or errored, plus non-2xx statuses
    done: int  # requests answered (the lines of its log)


def ensure_h2load() -> str:
    found = shutil.which("h2load")
    if found:
        return found
    subprocess.run(["apt-get", "install", "-y", "-q", "nghttp2-client"], check=True)
    return shutil.which("h2load") or "h2load"


def grpc_infer_body(
    model: str, input_name: str, row: list[float], outputs: tuple[str, ...]
) -> bytes:
    """One length-prefixed gRPC message: a ``ModelInferRequest`` of one FP64 row sent as
    ``raw_input_contents``, as ``tritonclient.grpc`` sends it."""
    from maas.protocols.v2grpc import message

    request = message("ModelInferRequest")(model_name=model)
    tensor = request.inputs.add(name=input_name, datatype="FP64", shape=[1, len(row)])
    del tensor  # its data travels in raw_input_contents
    request.raw_input_contents.append(np.asarray([row], dtype="<f8").tobytes())
    for name in outputs:
        request.outputs.add(name=name)
    payload: bytes = request.SerializeToString()
    return struct.pack(">BI", 0, len(payload)) + payload


def _percentile_ms(durations_us: list[int], q: float) -> float:
    return float(np.percentile(np.asarray(durations_us), q)) / 1000 if durations_us else 0.0


def h2load(
    binary: str,
    url: str,
    body: bytes,
    *,
    connections: int,
    seconds: float,
    headers: dict[str, str],
    work: Path,
    http1: bool = False,
) -> H2Result:
    """``connections`` clients, one stream each (``-m1``: a request waits for the
    previous answer, as wrk's connections do), on core 1: about ``seconds`` of calls,
    counted rather than timed.

    Counted, because h2load's timed mode (``-D``) waits about 1.7 s before it opens a
    connection again after a GOAWAY, and the HTTP/2 parser under maas's gRPC port
    (zttp) ends a connection after 4,096 streams with one; gRPC clients open the next
    one at once. So each connection makes at most 4,000 calls, and a point of one
    connection is shorter than ``seconds`` on a fast machine. REST is driven the same
    way."""
    data = work / f"h2-{abs(hash(body))}.bin"
    data.write_bytes(body)
    log = work / "h2load.log"
    log.unlink(missing_ok=True)  # h2load appends to its log: each point reads its own
    requests = connections * min(4_000, int(seconds * 2_500 / connections) + 1)
    command = ["taskset", "-c", "1", binary, "-t1", f"-c{connections}", "-m1"]
    command += [f"-n{requests}", "-d", str(data), f"--log-file={log}"]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    if http1:
        command.append("--h1")
    out = subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", out).group(1))  # type: ignore[union-attr]
    counts = re.search(r"(\d+) succeeded, (\d+) failed, (\d+) errored", out)
    statuses = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    failed = 0
    if counts:
        failed += int(counts.group(2)) + int(counts.group(3))
    if statuses:
        failed += int(statuses.group(3)) + int(statuses.group(4))
    durations = [int(line.split("\t")[2]) for line in log.read_text().splitlines() if line]
    p50, p99 = _percentile_ms(durations, 50), _percentile_ms(durations, 99)
    return H2Result(rps, p50, p99, failed, len(durations))
