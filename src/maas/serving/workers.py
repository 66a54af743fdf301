"""Where model calls run: never on the event loop.

``Workers`` runs a blocking function away from the loop (loading, closing, and the
calls of runtimes that release the GIL). ``ModelInstances`` is the seam between a
deployment and the compute that holds its runtime: ``ThreadInstances`` keeps the
runtime in this process and calls it from a thread pool (onnxruntime releases the GIL,
so threads scale); ``maas.serving.process_workers.ProcessInstances`` keeps one copy
per worker process (scikit-learn holds the GIL). Ray actors can implement the same
protocol.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol, TypeVar

import numpy as np

from maas.runtimes.base import Runtime

__all__ = ["InlineInstances", "ModelInstances", "ThreadInstances", "ThreadWorkers", "Workers"]

T = TypeVar("T")


class Workers(Protocol):
    async def run(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` away from the event loop and return its result."""
        ...

    def close(self) -> None: ...


class ThreadWorkers:
    """A bounded thread pool shared by the deployments of one server."""

    def __init__(self, threads: int, name: str = "maas-infer") -> None:
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=name)

    async def run(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


class ModelInstances(Protocol):
    """The loaded copies of one model version and the way to call them."""

    @property
    def kind(self) -> str:
        """``threads`` or ``processes``: shown in the deployment status."""
        ...

    @property
    def pids(self) -> list[int]:
        """Process ids of the live instances."""
        ...

    @property
    def is_alive(self) -> bool:
        """At least one instance can take a call now."""
        ...

    @property
    def capacity(self) -> int:
        """Calls worth having in flight at once (the batcher's concurrency)."""
        ...

    async def predict(
        self, inputs: dict[str, np.ndarray], outputs: list[str]
    ) -> dict[str, np.ndarray]:
        """Run one (checked) batch; raises ``WorkerCrashed`` if the instance dies."""
        ...

    async def close(self) -> None: ...


class ThreadInstances:
    """One runtime in this process, called from the shared thread pool."""

    kind = "threads"

    def __init__(self, runtime: Runtime, workers: Workers, count: int = 1) -> None:
        self._runtime = runtime
        self._workers = workers
        self._count = count

    @property
    def capacity(self) -> int:
        """``count`` calls at once from the shared pool: the runtime releases the GIL."""
        return self._count

    @property
    def runtime(self) -> Runtime:
        """The runtime itself: a language model's scheduler drives it directly."""
        return self._runtime

    @property
    def pids(self) -> list[int]:
        return [os.getpid()]

    @property
    def is_alive(self) -> bool:
        return True

    async def predict(
        self, inputs: dict[str, np.ndarray], outputs: list[str]
    ) -> dict[str, np.ndarray]:
        runtime = self._runtime
        return await self._workers.run(lambda: runtime.run_checked(inputs, outputs))

    async def close(self) -> None:
        await self._workers.run(self._runtime.close)


#: Input bytes up to which an ``InlineInstances`` call runs on the event loop itself.
INLINE_MAX_BYTES = 64 * 1024


class InlineInstances(ThreadInstances):
    """A tiny model called on the event loop itself, as MLServer with
    ``parallel_workers: 0`` calls its models: no thread hop and no pipe, so a call of a
    few rows costs the model's microseconds and nothing more. The loop waits meanwhile,
    which is what makes it only for models that answer in microseconds; a call larger
    than ``INLINE_MAX_BYTES`` of input goes to the thread pool instead, so one big batch
    cannot stall every other request for long."""

    kind = "inline"

    async def predict(
        self, inputs: dict[str, np.ndarray], outputs: list[str]
    ) -> dict[str, np.ndarray]:
        if sum(array.nbytes for array in inputs.values()) > INLINE_MAX_BYTES:
            return await super().predict(inputs, outputs)
        return self._runtime.run_checked(inputs, outputs)
