"""The chat model through maas on a simulated Ray cluster against one maas process.

Starts a Ray cluster of a head and two worker nodes on 127.0.0.1 (the nodes are
processes of this machine), then two ``maas serve --demo`` servers with SmolLM2-135M
(GGUF, llama.cpp): one alone (the model and its scheduler in the server), one with
``--ray ADDRESS`` (the model and its scheduler in one Ray actor, the server a gateway
that streams the pieces back). Both run llama.cpp on 2 threads (``cpus: 2`` on the
cluster). Streaming ``/v1/chat/completions`` at 1, 8 and 32 concurrent requests,
greedy, ``ignore_eos`` so each makes exactly ``--tokens`` tokens; the table gives
output tokens/s, requests/s and p50/p99 request latency (means over ``--rounds``
interleaved rounds), and the ratio of the Ray server to the single process.

On one machine the actor shares its cores with the gateway and the client, so this
measures the cost of the hop (Ray's streaming generator, the gateway's extra event loop
work), not the gain of more machines.

    python benchmarks/ray_chat.py                # 8 s per point, 32 tokens per request
    python benchmarks/ray_chat.py --seconds 15 --tokens 64
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import httpx

from ray_cluster import ray_cluster, server

_ENV = {"MAAS_DEMO_MODELS": '["smollm2"]'}
_QUESTION = [{"role": "user", "content": "Write a short story about a lighthouse."}]


def deploy_on_two_cpus(url: str) -> dict[str, object]:
    """smollm2:1 with 2 CPUs per replica (llama.cpp's threads follow them); its status."""
    base = f"{url}/api/v1/models/smollm2/versions/1/deployment"
    httpx.put(base, json={"cpus": 2}, timeout=180).raise_for_status()
    status: dict[str, object] = httpx.get(f"{base}/status").json()
    return status


async def one(client: httpx.AsyncClient, tokens: int) -> tuple[float, int]:
    """Seconds and completion tokens of one streamed chat completion."""
    body = {
        "model": "smollm2",
        "messages": _QUESTION,
        "max_tokens": tokens,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    started = time.perf_counter()
    made = 0
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if line.startswith("data: {") and '"usage":{' in line:
                made = int(line.split('"completion_tokens":', 1)[1].split(",", 1)[0])
    return time.perf_counter() - started, made


async def load(url: str, concurrency: int, seconds: float, tokens: int) -> dict[str, float]:
    """``concurrency`` callers in a loop for ``seconds``: tokens/s, req/s, p50/p99 s."""
    latencies: list[float] = []
    made = 0
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as client:
        deadline = time.perf_counter() + seconds
        started = time.perf_counter()

        async def caller() -> None:
            nonlocal made
            while time.perf_counter() < deadline:
                latency, count = await one(client, tokens)
                latencies.append(latency)
                made += count

        await asyncio.gather(*(caller() for _ in range(concurrency)))
        wall = time.perf_counter() - started
    quantiles = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else latencies * 99
    return {
        "tokens_s": made / wall,
        "req_s": len(latencies) / wall,
        "p50": quantiles[49],
        "p99": quantiles[98],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    cases = ("one process", "ray (1 actor)")
    runs: dict[str, dict[int, list[dict[str, float]]]] = {c: {n: [] for n in levels} for c in cases}
    with (
        ray_cluster() as cluster,
        server(env=_ENV) as alone,
        server("--ray", cluster.address, env=_ENV) as gateway,
    ):
        urls = dict(zip(cases, (alone, gateway), strict=True))
        for case, url in urls.items():
            status = deploy_on_two_cpus(url)
            print(f"{case}: smollm2 on {status['workers']}, pids {status['pids']}", flush=True)
            asyncio.run(load(url, 4, 2.0, args.tokens))  # warm-up
        # Interleaved, each round in the other order: on a shared machine both
        # cases then see the same background load.
        for round_ in range(args.rounds):
            for level in levels:
                for case in cases if round_ % 2 == 0 else cases[::-1]:
                    result = asyncio.run(load(urls[case], level, args.seconds, args.tokens))
                    runs[case][level].append(result)
    print(
        f"\n{args.tokens} tokens per request, {args.seconds:g} s per point, mean of {args.rounds}"
    )
    print("| case | conc | tokens/s | req/s | p50 s | p99 s | tokens/s vs one process |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    mean = {
        case: {
            n: {k: statistics.fmean(r[k] for r in rs) for k in rs[0]} for n, rs in points.items()
        }
        for case, points in runs.items()
    }
    base = mean["one process"]
    for case, points in mean.items():
        for c, r in points.items():
            ratio = f"{r['tokens_s'] / base[c]['tokens_s']:.0%}" if case != "one process" else ""
            print(
                f"| {case} | {c} | {r['tokens_s']:,.0f} | {r['req_s']:.2f} | {r['p50']:.2f} "
                f"| {r['p99']:.2f} | {ratio} |"
            )


if __name__ == "__main__":
    main()
