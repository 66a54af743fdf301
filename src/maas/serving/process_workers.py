"""Model instances in worker processes, for runtimes that hold the GIL (scikit-learn).

Each worker is a *spawned* process (never forked: a fork would copy the server's
threads, locks and sockets) that loads the artifact itself from its verified local
path and answers calls over a pair of pipes. Arrays travel pickled by the stdlib
``multiprocessing``: these are our own messages between our own processes, never a
user's pickle. Every call carries its own request id and answers are matched by it,
so a late answer (its caller timed out) can never reach another caller.

A worker that dies fails its in-flight call at once with ``WorkerCrashed`` (its pipe
reaches EOF; nothing waits on a timeout) and is restarted after an exponential
backoff. While no worker lives the pool reports itself dead, so the deployment is not
ready and new calls fail fast instead of queueing behind a corpse.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.abc
import itertools
import logging
import multiprocessing
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from maas.errors import MaasError, RuntimeFailure, WorkerCrashed, error_class_for
from maas.observability.metrics import WORKER_RESTARTS
from maas.runtimes.base import LoadOptions
from maas.runtimes.catalog import load_runtime

__all__ = ["LoadTarget", "ProcessInstances"]

log = logging.getLogger("maas.serving")

_SPAWN = multiprocessing.get_context("spawn")
#: Requests small enough to write from the event loop (a Linux pipe buffers 64 KiB).
_INLINE_MAX_BYTES = 4 * 1024
_INLINE_MAX_IN_FLIGHT = 8
_ErrorPayload = tuple[str, str, dict[str, Any]]


@dataclass(frozen=True)
class LoadTarget:
    """What a worker process loads: sent to it at spawn, so it must pickle."""

    framework: str
    path: Path
    options: LoadOptions


def _error_payload(exc: BaseException) -> _ErrorPayload:
    if isinstance(exc, MaasError):
        return exc.code, exc.message, exc.details
    return RuntimeFailure.code, f"the model failed: {type(exc).__name__}", {}


def _rebuild(payload: _ErrorPayload) -> MaasError:
    code, message, details = payload
    try:
        return error_class_for(code)(message, details=details)
    except TypeError:  # a class with its own constructor (MissingExtra)
        return RuntimeFailure(message, details=details)


class _WithoutTorch(importlib.abc.MetaPathFinder):
    """Refuses to import torch in a process that serves a ``.skops`` model.

    skops, at import, lists scikit-learn's estimators, which imports every sklearn
    package, its torch array-API shim included: with torch installed (the ``[llm]``
    extra) each worker would load it for nothing, about 180 MB and a second or more per
    process. An ``ImportError`` is what that discovery expects when torch is absent.
    """

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is not loaded in scikit-learn worker processes")


def serve(requests: Connection, responses: Connection, target: LoadTarget) -> None:
    """The body of a worker process: load, say ready, answer calls until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the server's to handle
    if target.framework == "sklearn":
        sys.meta_path.insert(0, _WithoutTorch())
    try:
        runtime = load_runtime(target.framework, target.path, target.options)
    except Exception as exc:  # reported to the parent, which raises it as a MaasError
        responses.send(("error", None, _error_payload(exc)))
        return
    responses.send(("ready", None, None))
    while True:
        try:
            message = requests.recv()
        except EOFError:  # the server went away
            return
        if message is None:
            return
        request_id, inputs, outputs = message
        try:
            result = runtime.predict(inputs, outputs)
        except Exception as exc:  # every failure belongs to this call only
            responses.send(("error", request_id, _error_payload(exc)))
        else:
            responses.send(("ok", request_id, result))


class _WorkerProcess:
    """One spawned process, its pipes and the calls waiting for its answers."""

    def __init__(self, target: LoadTarget, on_exit: Callable[[_WorkerProcess], None]) -> None:
        self._loop = asyncio.get_running_loop()
        self._on_exit = on_exit
        self._child_requests, self._requests = _SPAWN.Pipe(duplex=False)
        self._responses, self._child_responses = _SPAWN.Pipe(duplex=False)
        self.process = _SPAWN.Process(
            target=serve,
            args=(self._child_requests, self._child_responses, target),
            name=f"maas-worker:{target.path.name[:12]}",
            daemon=True,
        )
        self._send_lock = threading.Lock()
        self._ids = itertools.count()
        self._ready: asyncio.Future[None] = self._loop.create_future()
        self._pending: dict[int, asyncio.Future[dict[str, np.ndarray]]] = {}
        self.alive = False
        self.busy = False
        self.started_at = time.monotonic()

    @property
    def pid(self) -> int | None:
        return self.process.pid

    async def start(self) -> None:
        await asyncio.to_thread(self.process.start)
        # Our copies of the child's ends must go, or EOF never arrives when it dies.
        self._child_requests.close()
        self._child_responses.close()
        threading.Thread(target=self._read, name="maas-worker-reader", daemon=True).start()
        await self._ready
        self.alive = True

    def _read(self) -> None:
        """Reader thread: hand each answer to the loop; EOF means the process is gone."""
        while True:
            try:
                message = self._responses.recv()
            except (EOFError, OSError):
                break
            self._post(self._on_message, message)
        self._post(self._on_eof)

    def _post(self, callback: Callable[..., None], *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
            self._loop.call_soon_threadsafe(callback, *args)

    def _on_message(self, message: tuple[str, int | None, Any]) -> None:
        kind, request_id, payload = message
        if request_id is None:
            if not self._ready.done():
                if kind == "ready":
                    self._ready.set_result(None)
                else:
                    self._ready.set_exception(_rebuild(payload))
            return
        future = self._pending.pop(request_id, None)
        if future is None or future.done():  # its caller left; the answer is dropped
            return
        if kind == "ok":
            future.set_result(payload)
        else:
            future.set_exception(_rebuild(payload))

    def _on_eof(self) -> None:
        self.alive = False
        if not self._ready.done():
            self._ready.set_exception(WorkerCrashed("the worker process exited while loading"))
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(WorkerCrashed(retry_after=1.0))
        self._responses.close()
        self._on_exit(self)

    async def call(
        self, inputs: dict[str, np.ndarray], outputs: list[str]
    ) -> dict[str, np.ndarray]:
        request_id = next(self._ids)
        future: asyncio.Future[dict[str, np.ndarray]] = self._loop.create_future()
        self._pending[request_id] = future
        message = (request_id, inputs, outputs)
        try:
            if not self._send_inline(message, inputs):
                await asyncio.to_thread(self._send, message)
        except OSError:  # a broken pipe: the process died under us
            self._pending.pop(request_id, None)
            raise WorkerCrashed(retry_after=1.0) from None
        try:
            return await future
        finally:
            self._pending.pop(request_id, None)

    def _send_inline(self, message: Any, inputs: dict[str, np.ndarray]) -> bool:
        """Send a small request from the event loop itself, sparing a thread hop per call
        (the largest cost of a small model's request after the process switch).

        Only when it cannot block: the payload is far below the pipe's buffer, no other
        send is writing, and no more calls are in flight to this worker than the buffer
        holds such requests, so the worker is reading and the write returns at once.
        """
        if len(self._pending) > _INLINE_MAX_IN_FLIGHT:
            return False
        if any(a.dtype == object for a in inputs.values()):  # strings: size unknown
            return False
        if sum(array.nbytes for array in inputs.values()) > _INLINE_MAX_BYTES:
            return False
        if not self._send_lock.acquire(blocking=False):
            return False
        try:
            self._requests.send(message)
        finally:
            self._send_lock.release()
        return True

    def _send(self, message: Any) -> None:
        with self._send_lock:  # a cancelled caller's send may still be writing
            self._requests.send(message)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Blocking: ask the process to exit, then insist."""
        with contextlib.suppress(OSError):  # already dead
            self._send(None)
        self._requests.close()
        self.process.join(timeout_s)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()


class ProcessInstances:
    """``count`` worker processes of one model version, restarted when they die."""

    kind = "processes"

    def __init__(
        self,
        target: LoadTarget,
        count: int,
        *,
        labels: tuple[str, str] = ("", ""),
        backoff_initial_s: float = 0.1,
        backoff_max_s: float = 10.0,
        backoff_reset_s: float = 30.0,
    ) -> None:
        self._target = target
        self._count = count
        self._restarts = WORKER_RESTARTS.labels(*labels)
        self._backoff_initial_s = backoff_initial_s
        self._backoff_max_s = backoff_max_s
        self._backoff_reset_s = backoff_reset_s
        self._workers: list[_WorkerProcess] = []
        self._failures: list[int] = []
        self._changed = asyncio.Event()
        self._restarting: set[asyncio.Task[None]] = set()
        self._started = False
        self._closing = False
        #: The backoff delays used so far, oldest first (status and tests read it).
        self.restart_delays: list[float] = []

    @property
    def pids(self) -> list[int]:
        return [w.pid for w in self._workers if w.alive and w.pid is not None]

    @property
    def is_alive(self) -> bool:
        return any(w.alive for w in self._workers)

    async def start(self) -> None:
        """Spawn every worker and wait until each has loaded the model."""
        self._workers = [_WorkerProcess(self._target, self._on_exit) for _ in range(self._count)]
        self._failures = [0] * self._count
        results = await asyncio.gather(*(w.start() for w in self._workers), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            await self.close()
            raise errors[0]
        self._started = True

    async def predict(
        self, inputs: dict[str, np.ndarray], outputs: list[str]
    ) -> dict[str, np.ndarray]:
        worker = await self._acquire()
        try:
            return await worker.call(inputs, outputs)
        finally:
            worker.busy = False
            self._changed.set()

    async def _acquire(self) -> _WorkerProcess:
        while True:
            if not self.is_alive:
                raise WorkerCrashed("no live worker process; one is restarting", retry_after=1.0)
            for worker in self._workers:
                if worker.alive and not worker.busy:
                    worker.busy = True
                    return worker
            self._changed.clear()
            await self._changed.wait()

    def _on_exit(self, worker: _WorkerProcess) -> None:
        self._changed.set()
        if self._closing or not self._started or worker not in self._workers:
            return
        slot = self._workers.index(worker)
        if time.monotonic() - worker.started_at > self._backoff_reset_s:
            self._failures[slot] = 0
        delay = min(self._backoff_max_s, self._backoff_initial_s * 2 ** self._failures[slot])
        self._failures[slot] += 1
        self.restart_delays.append(delay)
        log.warning("worker process %s died; restarting in %.1f s", worker.pid, delay)
        task = asyncio.get_running_loop().create_task(self._restart(slot, delay))
        self._restarting.add(task)
        task.add_done_callback(self._restarting.discard)

    async def _restart(self, slot: int, delay: float) -> None:
        await asyncio.sleep(delay)  # the backoff itself: one timer, not a polling loop
        if self._closing:
            return
        worker = _WorkerProcess(self._target, self._on_exit)
        self._workers[slot] = worker
        try:
            await worker.start()
        except MaasError as exc:  # its EOF has already scheduled the next attempt
            log.error("worker process failed to restart: %s", exc.message)
            return
        self._restarts.inc()
        self._changed.set()

    async def close(self) -> None:
        self._closing = True
        for task in list(self._restarting):
            task.cancel()
        await asyncio.gather(*self._restarting, return_exceptions=True)
        await asyncio.gather(*(asyncio.to_thread(w.stop) for w in self._workers))
