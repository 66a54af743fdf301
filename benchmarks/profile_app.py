"""The whole maas ASGI app in process, with no sockets: the cost of one V2 call.

Runs the app's lifespan, then sends the same V2 JSON request to the app callable in a
loop (``--concurrency`` at a time) and prints microseconds per request. With
``--profile`` it runs under cProfile and prints the functions that cost the most, which
separates our code from HTTP parsing and the kernel (see py-spy for those).

    python benchmarks/profile_app.py --requests 5000 --profile
    python benchmarks/profile_app.py --requests 5000 --concurrency 16 --auth  # with a key

``--auth`` turns authentication on and sends the admin key (``Authorization: Bearer``),
so the key check and the admission are in the path; usage metering is on either way.
Event-loop CPU per call (``time.thread_time``) is less disturbed by other load on a
shared machine than wall time or requests/s.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from maas.api.app import create_app
from maas.config import AuthSettings, ServingSettings, Settings
from maas.services import open_services

ADMIN_KEY = "maas_profile_" + "0123456789abcdef" * 2
_BODY = orjson.dumps(
    {
        "inputs": [
            {"name": "input", "datatype": "FP64", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}
        ],
        "outputs": [{"name": "predict"}],
    }
)


def _scope(path: str, auth: bool) -> dict[str, Any]:
    headers = [
        (b"host", b"bench"),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(_BODY)).encode()),
    ]
    if auth:
        headers.append((b"authorization", f"Bearer {ADMIN_KEY}".encode()))
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }


async def _call(app: Any, path: str, auth: bool) -> int:
    sent = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            await asyncio.sleep(3600)  # no disconnect while the request runs
        sent = True
        return {"type": "http.request", "body": _BODY, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(_scope(path, auth), receive, send)
    return status


async def _run(args: argparse.Namespace, home: Path) -> None:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        home=home,
        demo=True,
        auth=AuthSettings(enabled=args.auth, admin_key=ADMIN_KEY if args.auth else None),
        serving=ServingSettings(worker_mode=args.worker_mode),
    )
    async with open_services(settings) as services:
        await services.models.wait_loaded()
        await _load(create_app(services), args)


async def _load(app: Any, args: argparse.Namespace) -> None:
    path = f"/v2/models/{args.model}/infer"
    assert await _call(app, path, args.auth) == 200

    async def worker(count: int) -> None:
        for _ in range(count):
            await _call(app, path, args.auth)

    per_worker = args.requests // args.concurrency
    profiler = cProfile.Profile() if args.profile else None
    started, cpu_started, all_started = time.perf_counter(), time.thread_time(), time.process_time()
    if profiler is not None:
        profiler.enable()
    await asyncio.gather(*(worker(per_worker) for _ in range(args.concurrency)))
    if profiler is not None:
        profiler.disable()
    elapsed, loop_cpu = time.perf_counter() - started, time.thread_time() - cpu_started
    process_cpu = time.process_time() - all_started
    done = per_worker * args.concurrency
    print(
        f"{done} requests, {elapsed / done * 1e6:.0f} us/request wall, {done / elapsed:.0f} req/s, "
        f"{loop_cpu / done * 1e6:.0f} us/request of event-loop CPU, "
        f"{process_cpu / done * 1e6:.0f} us/request of CPU in all threads"
    )
    if profiler is not None:
        pstats.Stats(profiler).sort_stats(args.sort).print_stats(args.top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--model", default="iris")
    parser.add_argument(
        "--worker-mode",
        default="threads",
        choices=["auto", "threads", "inline", "processes", "shared"],
    )
    parser.add_argument("--auth", action="store_true", help="auth on, the admin key sent")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--sort", default="tottime")
    parser.add_argument("--top", type=int, default=35)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        import uvloop

        uvloop.run(_run(args, Path(home)))


if __name__ == "__main__":
    main()
