"""Image classification through maas against the same runtime in process, same run.

EfficientNet-Lite0 (the demo's, exported from torch at the server's first start)
classifies scikit-image's coffee cup, a 600x400 JPEG: decoding, preprocessing and the
ONNX model every call. The server is pinned to core 0 (its onnxruntime then uses one
thread); the in-process reference is ``OnnxImageRuntime.predict`` on one thread, pinned
to the same core; the clients run on core 1. Printed: latency p50/p99 and throughput
of the reference, of V2 binary (tritonclient) and of the multipart ``classify``
endpoint (httpx), and each one's ratio to the reference.

    python benchmarks/vision.py                # 10 s per point
    python benchmarks/vision.py --seconds 3    # smoke run
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import skimage.data
import tritonclient.http as triton
from PIL import Image
from run import free_port, maas_command, running

from maas.runtimes.base import LoadOptions
from maas.runtimes.onnx_image import OnnxImageRuntime


def coffee_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(skimage.data.coffee()).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def drive(call: Callable[[], object], seconds: float, concurrency: int) -> dict[str, float]:
    """Calls per second and latency percentiles (ms) of ``concurrency`` threads calling
    for ``seconds``, after one warm-up call each."""
    latencies: list[float] = []
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def worker() -> None:
        call()
        mine = []
        while (start := time.perf_counter()) < deadline:
            call()
            mine.append(time.perf_counter() - start)
        with lock:
            latencies.extend(mine)

    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    ordered = sorted(latencies)
    return {
        "rps": len(ordered) / elapsed,
        "p50": statistics.median(ordered) * 1000,
        "p99": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000,
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    image = coffee_jpeg()
    tensor = np.empty(1, dtype=object)
    tensor[:] = [image]
    rows: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        home, port = Path(tmp) / "home", free_port()
        url = f"http://127.0.0.1:{port}"
        env = {"MAAS_DEMO_MODELS": '["efficientnet"]', "MAAS_LOG_LEVEL": "warning"}
        command = [*maas_command(port, home, no_auth=True), "--demo"]
        with running(command, env, Path(tmp) / "server.log", f"{url}/v2/health/ready"):
            directory = next(home.rglob("onnx_image.json")).parent
            os.sched_setaffinity(0, {0})  # the reference: the server's core, one thread
            runtime = OnnxImageRuntime.load(directory, options=LoadOptions(threads=1))
            rows["in process, 1 thread"] = drive(
                lambda: runtime.predict({"image": tensor}), args.seconds, 1
            )
            runtime.close()
            os.sched_setaffinity(0, {1})  # the clients
            local = threading.local()

            def v2() -> object:
                if not hasattr(local, "client"):
                    local.client = triton.InferenceServerClient(f"127.0.0.1:{port}")
                data = triton.InferInput("image", [1], "BYTES")
                data.set_data_from_numpy(tensor)
                wanted = [triton.InferRequestedOutput("top_labels")]
                return local.client.infer("efficientnet", [data], outputs=wanted)

            def multipart() -> object:
                if not hasattr(local, "http"):
                    local.http = httpx.Client(base_url=url, timeout=60)
                files = {"image": ("coffee.jpg", image, "image/jpeg")}
                response = local.http.post("/v2/models/efficientnet/classify", files=files)
                response.raise_for_status()
                return response

            for name, call in (("V2 binary", v2), ("multipart classify", multipart)):
                for concurrency in (1, args.concurrency):
                    rows[f"maas {name}, {concurrency} conn"] = drive(
                        call, args.seconds, concurrency
                    )
    reference = rows["in process, 1 thread"]
    print(f"EfficientNet-Lite0, coffee 600x400 JPEG ({len(image)} bytes), {args.seconds:g} s/point")
    print("| path | p50 ms | p99 ms | images/s | p50 vs in process | images/s vs in process |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, row in rows.items():
        print(
            f"| {name} | {row['p50']:.2f} | {row['p99']:.2f} | {row['rps']:.1f} | "
            f"{row['p50'] / reference['p50']:.2f}x | {row['rps'] / reference['rps']:.2f}x |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
