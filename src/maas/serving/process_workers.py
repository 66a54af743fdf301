"""Model instances in worker processes, for runtimes that hold the GIL (scikit-learn).

Each worker is a *spawned* process (never forked: a fork would copy the server's
threads, locks and sockets) that loads the artifact itself from its verified local
path and answers calls over a pair of pipes. Arrays travel pickled, framed as
``multiprocessing.Connection`` frames them: these are our own messages between our own
processes, never a user's pickle. Every call carries its own request id and answers
are matched by it, so a late answer (its caller timed out) can never reach another
caller.

The server's ends of the pipes belong to the event loop (``connect_read_pipe`` and
``connect_write_pipe``): a call is a non-blocking write, an answer a callback, with no
thread hop either way. On one core a thread hop is the expensive part of a small
model's call: the woken thread must win the GIL back from the loop. Calls are
pipelined (``PIPELINE_DEPTH`` per worker), so a busy worker finds its next request
already in the pipe and answers several per wake-up instead of one per round trip.

A worker that dies fails its in-flight call at once with ``WorkerCrashed`` (its pipe
reaches EOF; nothing waits on a timeout) and is restarted after an exponential
backoff. While no worker lives the pool reports itself dead, so the deployment is not
ready and new calls fail fast instead of queueing behind a corpse.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import multiprocessing
import os
import pickle
import signal
import struct
import sys
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
from maas.runtimes.sklearn import WithoutTorch

__all__ = ["LoadTarget", "ProcessInstances"]

log = logging.getLogger("maas.serving")

_SPAWN = multiprocessing.get_context("spawn")
#: Calls one worker process holds at once: one running, the rest waiting in its pipe.
PIPELINE_DEPTH = 4
#: Requests larger than this are pickled in a thread rather than on the event loop.
_PICKLE_INLINE_MAX_BYTES = 1 << 20
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


def serve(requests: Connection, responses: Connection, target: LoadTarget) -> None:
    """The body of a worker process: load, say ready, answer calls until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the server's to handle
    if target.framework == "sklearn":
        sys.meta_path.insert(0, WithoutTorch())  # for the whole worker
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
            result = runtime.run_checked(inputs, outputs)  # checked by the server
        except Exception as exc:  # every failure belongs to this call only
            responses.send(("error", request_id, _error_payload(exc)))
        else:
            responses.send(("ok", request_id, result))


def _frame(payload: bytes) -> list[bytes]:
    """``payload`` framed as ``multiprocessing.Connection.recv_bytes`` reads it."""
    size = len(payload)
    if size > 0x7FFFFFFF:
        return [struct.pack("!iQ", -1, size), payload]
    return [struct.pack("!i", size), payload]


class _FrameReader(asyncio.Protocol):
    """The worker's answers, unframed and unpickled on the event loop as they arrive."""

    def __init__(self, on_message: Callable[[Any], None], on_eof: Callable[[], None]) -> None:
        self._on_message = on_message
        self._on_eof = on_eof
        self._buffer = bytearray()

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        while len(buffer) >= 4:
            (size,) = struct.unpack_from("!i", buffer)
            start = 4
            if size == -1:  # a frame of 2 GiB or more: its length follows as 8 bytes
                if len(buffer) < 12:
                    return
                (size,) = struct.unpack_from("!Q", buffer, 4)
                start = 12
            end = start + size
            if len(buffer) < end:
                return
            with memoryview(buffer) as view:
                message = pickle.loads(view[start:end])
            del buffer[:end]
            self._on_message(message)

    def connection_lost(self, exc: Exception | None) -> None:
        self._on_eof()


class _WorkerProcess:
    """One spawned process, its pipes and the calls waiting for its answers."""

    def __init__(self, target: LoadTarget, on_exit: Callable[[_WorkerProcess], None]) -> None:
        self._loop = asyncio.get_running_loop()
        self._on_exit = on_exit
        self._child_requests, requests = _SPAWN.Pipe(duplex=False)
        responses, self._child_responses = _SPAWN.Pipe(duplex=False)
        # The loop's transports own plain file objects over our ends of the pipes.
        self._requests_file = os.fdopen(os.dup(requests.fileno()), "wb", buffering=0)
        self._responses_file = os.fdopen(os.dup(responses.fileno()), "rb", buffering=0)
        requests.close()
        responses.close()
        self._writer: asyncio.WriteTransport | None = None
        self._reader: asyncio.ReadTransport | None = None
        self.process = _SPAWN.Process(
            target=serve,
            args=(self._child_requests, self._child_responses, target),
            name=f"maas-worker:{target.path.name[:12]}",
            daemon=True,
        )
        self._ids = itertools.count()
        self._ready: asyncio.Future[None] = self._loop.create_future()
        self._pending: dict[int, asyncio.Future[dict[str, np.ndarray]]] = {}
        self._exited = False
        self.alive = False
        #: Calls sent and not yet answered or abandoned by their callers.
        self.in_flight = 0
        self.started_at = time.monotonic()

    @property
    def pid(self) -> int | None:
        return self.process.pid

    async def start(self) -> None:
        try:
            await asyncio.to_thread(self.process.start)
        finally:
            # Our copies of the child's ends must go, or EOF never arrives when it dies.
            self._child_requests.close()
            self._child_responses.close()
        self._reader, _ = await self._loop.connect_read_pipe(
            lambda: _FrameReader(self._on_message, self._on_eof), self._responses_file
        )
        self._writer, _ = await self._loop.connect_write_pipe(asyncio.Protocol, self._requests_file)
        await self._ready
        self.alive = True

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
        if self._exited:
            return
        self._exited = True
        self.alive = False
        if not self._ready.done():
            self._ready.set_exception(WorkerCrashed("the worker process exited while loading"))
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(WorkerCrashed(retry_after=1.0))
        if self._writer is not None and not self._writer.is_closing():
            self._writer.abort()  # the pipe has no reader any more
        self._on_exit(self)

    async def call(
        self, inputs: dict[str, np.ndarray], outputs: list[str]
    ) -> dict[str, np.ndarray]:
        writer = self._writer
        if writer is None or writer.is_closing() or not self.alive:
            raise WorkerCrashed(retry_after=1.0)
        request_id = next(self._ids)
        future: asyncio.Future[dict[str, np.ndarray]] = self._loop.create_future()
        self._pending[request_id] = future
        self.in_flight += 1
        try:
            message = (request_id, inputs, outputs)
            if _is_large(inputs):  # pickling copies every byte: not on the loop's time
                payload = await asyncio.to_thread(pickle.dumps, message, pickle.HIGHEST_PROTOCOL)
            else:
                payload = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
            if writer.is_closing():  # the process died while we pickled
                raise WorkerCrashed(retry_after=1.0)
            writer.writelines(_frame(payload))  # never blocks: the transport buffers
            return await future
        finally:
            self.in_flight -= 1
            self._pending.pop(request_id, None)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Blocking, off the loop after ``say_goodbye``: wait for the exit, then insist."""
        self.process.join(timeout_s)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()

    def say_goodbye(self) -> None:
        """On the loop: ask the process to exit once it has answered what is queued.

        The answers still come (the read side stays open until the process's EOF)."""
        if self._writer is None:
            self._requests_file.close()
            if self._reader is None:
                self._responses_file.close()
            return
        if not self._writer.is_closing():
            self._writer.writelines(_frame(pickle.dumps(None)))
            self._writer.close()  # flushes what is buffered, then closes the pipe


def _is_large(inputs: dict[str, np.ndarray]) -> bool:
    size = 0
    for array in inputs.values():
        if array.dtype == object:  # strings: their own lengths, not the pointers'
            size += sum(len(v) if isinstance(v, bytes | str) else 64 for v in array.flat)
        else:
            size += array.nbytes
    return size > _PICKLE_INLINE_MAX_BYTES


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

    @property
    def capacity(self) -> int:
        """Calls worth sending at once: ``PIPELINE_DEPTH`` per worker process."""
        return self._count * PIPELINE_DEPTH

    async def predict(
        self, inputs: dict[str, np.ndarray], outputs: list[str]
    ) -> dict[str, np.ndarray]:
        worker = await self._acquire()
        try:
            return await worker.call(inputs, outputs)
        finally:
            self._changed.set()

    async def _acquire(self) -> _WorkerProcess:
        """The live worker with the fewest calls in flight, below ``PIPELINE_DEPTH``."""
        while True:
            if not self.is_alive:
                raise WorkerCrashed("no live worker process; one is restarting", retry_after=1.0)
            live = [w for w in self._workers if w.alive and w.in_flight < PIPELINE_DEPTH]
            if live:
                return min(live, key=lambda w: w.in_flight)
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
        # The one line of a crash: the calls it failed are counted, not logged, each.
        log.error("worker process %s died; restarting in %.1f s", worker.pid, delay)
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
        for worker in self._workers:
            worker.say_goodbye()
        await asyncio.gather(*(asyncio.to_thread(w.stop) for w in self._workers))
