"""What one hop of text costs from a Ray actor to the gateway: a streaming generator's
item against a polling call, each carrying one piece.

A language model's replica (``maas.serving.ray_generation``) sends its pieces to the
gateway on a Ray streaming generator. The alternative is the gateway polling the
replica for what it has made since the last poll (one actor call per batch). This
measures both with the piece maas sends (a ``TextDelta``), one piece per hop (the worst
case: the gateway keeps up, so nothing is coalesced): wall time and the gateway's CPU
time per hop, on a one-node Ray cluster on loopback.

    python benchmarks/ray_stream_hop.py             # 2,000 hops each way
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import AsyncIterator
from typing import Any

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import ray
from ray.cluster_utils import Cluster

from maas.serving.generation import TextDelta


class Source:
    """Pieces as fast as they are asked for."""

    async def stream(self, count: int) -> AsyncIterator[list[Any]]:
        for _ in range(count):
            yield [(0, TextDelta(" word"), 1)]

    async def poll(self) -> list[Any]:
        return [(0, TextDelta(" word"), 1)]


async def streamed(actor: Any, count: int) -> None:
    refs = actor.stream.options(
        num_returns="streaming", _generator_backpressure_num_objects=4
    ).remote(count)
    async for ref in refs:
        await ref


async def polled(actor: Any, count: int) -> None:
    for _ in range(count):
        await actor.poll.remote()


def measure(name: str, run: Any, actor: Any, count: int) -> None:
    asyncio.run(run(actor, 50))  # warm-up
    wall, cpu = time.perf_counter(), time.process_time()
    asyncio.run(run(actor, count))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(
        f"| {name} | {count} | {wall / count * 1e6:,.0f} | {cpu / count * 1e6:,.0f} "
        f"| {count / wall:,.0f} |",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hops", type=int, default=2000)
    args = parser.parse_args()
    node = {"num_cpus": 2, "object_store_memory": 80 * 1024 * 1024, "node_ip_address": "127.0.0.1"}
    cluster = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
    try:
        ray.init(address=cluster.address, log_to_driver=False)
        actor = ray.remote(Source).remote()
        print("| way | hops | wall µs/hop | gateway CPU µs/hop | hops/s |")
        print("| --- | ---: | ---: | ---: | ---: |")
        measure("streaming generator", streamed, actor, args.hops)
        measure("polling call", polled, actor, args.hops)
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main()
