"""Model instances in worker processes, for runtimes that hold the GIL (scikit-learn).

Each worker is a fresh interpreter (never forked: a fork would copy the server's
threads, locks and sockets) that loads the artifact itself from its verified local
path and answers calls over a pair of pipes, in the messages and frames of
``maas.serving.framed`` (pickled, each call with its own request id). It is started by
``subprocess``, not by ``multiprocessing``'s spawn: a worker needs nothing of
multiprocessing but its ``Connection`` framing, and the spawn start method also runs a
resource-tracker process (12 MB for semaphores and shared memory no worker uses) and
makes the child import the parent's main module.

The server's ends of the pipes belong to the event loop (``connect_read_pipe`` and
``connect_write_pipe``): a call is a non-blocking write, an answer a callback, with no
thread hop either way. On one core a thread hop is the expensive part of a small
model's call: the woken thread must win the GIL back from the loop. Calls are
pipelined (``PIPELINE_DEPTH`` per worker), so a busy worker finds its next request
already in the pipe and answers several per wake-up instead of one per round trip.

A worker holds one model or several: each is loaded under a key, and every call names
the key it is for. ``ProcessPool`` is a set of identical workers (each holds every key
of the pool). A deployment's own ``ProcessInstances`` owns a pool of one key; the
server's shared pool (``SharedInstances``) holds the small scikit-learn models of many
deployments, since the interpreter, numpy, scipy and scikit-learn of a worker cost
about 150 MB and a small model a few kilobytes: ten small models in ten workers would
take 1.5 GB to hold what fits in one.

A worker that dies fails its in-flight calls at once with ``WorkerCrashed`` (its pipe
reaches EOF; nothing waits on a timeout) and is restarted, with every key of its pool,
after an exponential backoff. While no worker lives the pool reports itself dead, so
its deployments are not ready and new calls fail fast instead of queueing behind a
corpse.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from maas.errors import MaasError, WorkerCrashed
from maas.observability.metrics import WORKER_RESTARTS
from maas.runtimes.base import LoadOptions, Runtime
from maas.runtimes.catalog import load_runtime
from maas.runtimes.sklearn import WithoutTorch
from maas.serving.framed import FramedPeer, answer_until_eof, dumps, error_payload, send

__all__ = [
    "LoadTarget",
    "ProcessInstances",
    "ProcessPool",
    "SharedInstances",
    "WorkerModels",
    "discard_spare_worker",
    "key_of",
    "kill_worker_processes",
    "prestart_worker",
    "worker_main",
]

log = logging.getLogger("maas.serving")

#: Every worker process started and not yet reaped, for ``kill_worker_processes``.
_STARTED: weakref.WeakSet[subprocess.Popen[bytes]] = weakref.WeakSet()
#: Calls one worker process holds at once: one running, the rest waiting in its pipe.
PIPELINE_DEPTH = 4


@dataclass(frozen=True)
class LoadTarget:
    """What a worker process loads: sent to it at spawn, so it must pickle."""

    framework: str
    path: Path
    options: LoadOptions


class WorkerModels:
    """The runtimes of one worker process (or Ray actor), by key."""

    def __init__(self) -> None:
        self.runtimes: dict[str, Runtime] = {}
        self._without_torch = False

    def load(self, key: str, target: LoadTarget) -> None:
        if target.framework == "sklearn" and not self._without_torch:
            sys.meta_path.insert(0, WithoutTorch())  # for the whole worker
            self._without_torch = True
        if key not in self.runtimes:
            self.runtimes[key] = load_runtime(target.framework, target.path, target.options)

    def unload(self, key: str) -> None:
        runtime = self.runtimes.pop(key, None)
        if runtime is not None:
            runtime.close()

    def answer(self, message: tuple[Any, ...]) -> Any:
        """What the parent asked: ``("call", id, key, inputs, outputs)``,
        ``("load", id, key, target)`` or ``("unload", id, key)``."""
        kind, _, key, *rest = message
        if kind == "call":
            inputs, outputs = rest
            return self.runtimes[key].run_checked(inputs, outputs)  # checked by the server
        if kind == "load":
            self.load(key, rest[0])
        else:
            self.unload(key)
        return None


def worker_main(requests_fd: int, responses_fd: int, *, preload: bool = False) -> None:
    """The entry of a worker process (``_WorkerProcess.start``): its first message says
    what to load. A spare (``prestart_worker``) imports scikit-learn while it waits."""
    requests = Connection(requests_fd, writable=False)
    responses = Connection(responses_fd, readable=False)
    if preload:
        with contextlib.suppress(ImportError):  # then the load says what is missing
            from maas.runtimes.sklearn import import_skops

            import_skops()
    try:
        targets = requests.recv()
    except EOFError:  # the server went away before it said what to load
        return
    serve(requests, responses, targets)


@dataclass(frozen=True)
class _Spare:
    """A worker process started ahead of need, and the server's ends of its pipes."""

    process: subprocess.Popen[bytes]
    requests: int
    responses: int


#: At most one spare worker (``prestart_worker``), taken by the first worker started.
_SPARES: list[_Spare] = []


def prestart_worker() -> None:
    """Start one worker process now, to be the first a pool needs.

    ``maas serve`` calls this before its own imports: a worker's interpreter and
    scikit-learn take about 1.5 s of CPU, which then run on the other core while the
    server imports, opens the registry and loads its other models, instead of after
    them (the restart of the full demo was ready about that much later). A spare no
    pool took by the end of the load at start is ended (``discard_spare_worker``), so
    a server without small models pays nothing for it after its start.
    """
    if _SPARES:
        return
    child_requests, requests = os.pipe()
    responses, child_responses = os.pipe()
    try:
        process = _launch(child_requests, child_responses, preload=True)
    except OSError:
        for fd in (requests, responses):
            os.close(fd)
        raise
    finally:
        os.close(child_requests)
        os.close(child_responses)
    _STARTED.add(process)
    _SPARES.append(_Spare(process, requests, responses))


def discard_spare_worker() -> None:
    """End the spare worker if no pool took it: closing its pipe ends its wait."""
    while _SPARES:
        spare = _SPARES.pop()
        os.close(spare.requests)
        os.close(spare.responses)
        try:
            spare.process.wait(5.0)
        except subprocess.TimeoutExpired:
            spare.process.kill()
            spare.process.wait()


def _launch(
    child_requests: int, child_responses: int, *, preload: bool = False
) -> subprocess.Popen[bytes]:
    """``python -c`` running ``worker_main`` with this interpreter's flags and import
    path (as multiprocessing's spawn would give it), on the child's ends of the pipes."""
    code = (
        f"import sys; sys.path[:] = {sys.path!r}; "
        "from maas.serving.process_workers import worker_main; "
        f"worker_main({child_requests}, {child_responses}, preload={preload})"
    )
    flags = subprocess._args_from_interpreter_flags()  # type: ignore[attr-defined]
    return subprocess.Popen(
        [sys.executable, *flags, "-c", code],
        stdin=subprocess.DEVNULL,
        pass_fds=(child_requests, child_responses),
    )


def kill_worker_processes() -> None:
    """Kill every worker process still running (a shutdown past its deadline)."""
    for process in list(_STARTED):
        if process.poll() is None:
            process.kill()


def serve(requests: Connection, responses: Connection, targets: dict[str, LoadTarget]) -> None:
    """The body of a worker process: load, say ready, answer until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the server's to handle
    models = WorkerModels()
    try:
        for key, target in targets.items():
            models.load(key, target)
    except Exception as exc:  # reported to the parent, which raises it as a MaasError
        responses.send(("error", None, error_payload(exc)))
        return
    responses.send(("ready", None, None))
    answer_until_eof(requests, responses, models.answer)


class _WorkerProcess(FramedPeer):
    """One worker process, its pipes and the calls waiting for its answers."""

    def __init__(
        self, targets: dict[str, LoadTarget], on_exit: Callable[[_WorkerProcess], None]
    ) -> None:
        super().__init__()
        self._on_exit = on_exit
        self._targets = targets
        self.process: subprocess.Popen[bytes] | None = None
        self._spare = _SPARES.pop() if _SPARES else None
        if self._spare is not None:  # started already: its pipes are ours
            requests, responses = self._spare.requests, self._spare.responses
        else:
            # The child's ends are inherited by it alone (pass_fds); ours are the loop's.
            self._child_requests, requests = os.pipe()
            responses, self._child_responses = os.pipe()
        self._requests_file = os.fdopen(requests, "wb", buffering=0)
        self._responses_file = os.fdopen(responses, "rb", buffering=0)
        self._reader: asyncio.ReadTransport | None = None
        #: The keys this process holds (or is loading): calls for others go elsewhere.
        self.keys = set(targets)
        self.started_at = time.monotonic()

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    async def start(self) -> None:
        if self._spare is not None:
            self.process = self._spare.process
        else:
            try:
                self.process = await asyncio.to_thread(
                    _launch, self._child_requests, self._child_responses
                )
            finally:
                # Our copies of the child's ends must go, or EOF never arrives when it dies.
                os.close(self._child_requests)
                os.close(self._child_responses)
            _STARTED.add(self.process)
        self._reader, _ = await self._loop.connect_read_pipe(self.reader, self._responses_file)
        self._writer, _ = await self._loop.connect_write_pipe(asyncio.Protocol, self._requests_file)
        send(self._writer, dumps(self._targets))
        await self._ready
        self.alive = True

    def _gone(self, loading: bool = False) -> Exception:
        if loading:
            return WorkerCrashed("the worker process exited while loading")
        return WorkerCrashed(retry_after=1.0)

    def _ended(self) -> None:
        if self.process is not None:  # reaped off the loop: its EOF comes as it exits
            self._loop.run_in_executor(None, self.process.wait)
        self._on_exit(self)

    async def load(self, key: str, target: LoadTarget) -> None:
        self.keys.add(key)
        try:
            await self._request("load", key, target)
        except BaseException:
            self.keys.discard(key)
            raise

    async def unload(self, key: str) -> None:
        self.keys.discard(key)
        await self._request("unload", key)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Blocking, off the loop after ``say_goodbye``: wait for the exit, then insist."""
        if self.process is None:
            return
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def say_goodbye(self) -> None:
        """On the loop: ask the process to exit once it has answered what is queued.

        The answers still come (the read side stays open until the process's EOF)."""
        if self._writer is None:
            self._requests_file.close()
            if self._reader is None:
                self._responses_file.close()
            return
        if not self._writer.is_closing():
            send(self._writer, dumps(None))
            self._writer.close()  # flushes what is buffered, then closes the pipe


def key_of(target: LoadTarget) -> str:
    """One key per artifact and runtime: two versions of the same file share a copy."""
    return f"{target.framework}:{target.path}"


class ProcessPool:
    """``count`` worker processes holding the same models, restarted when they die."""

    def __init__(
        self,
        count: int,
        *,
        labels: tuple[str, str] = ("", ""),
        backoff_initial_s: float = 0.1,
        backoff_max_s: float = 10.0,
        backoff_reset_s: float = 30.0,
    ) -> None:
        self._count = count
        self._restarts = WORKER_RESTARTS.labels(*labels)
        self._backoff_initial_s = backoff_initial_s
        self._backoff_max_s = backoff_max_s
        self._backoff_reset_s = backoff_reset_s
        self._targets: dict[str, LoadTarget] = {}
        self._users: dict[str, int] = {}
        self._workers: list[_WorkerProcess] = []
        self._failures: list[int] = []
        self._changed = asyncio.Event()
        self._restarting: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()  # one change of the set of models at a time
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

    @property
    def capacity(self) -> int:
        """Calls worth sending at once: ``PIPELINE_DEPTH`` per worker process."""
        return self._count * PIPELINE_DEPTH

    @property
    def keys(self) -> list[str]:
        return list(self._targets)

    async def add(self, key: str, target: LoadTarget) -> None:
        """Hold ``target`` under ``key`` in every worker (spawning them on first use);
        a key added again only counts one more user."""
        async with self._lock:
            if self._closing:
                raise WorkerCrashed("the worker pool is closing", retry_after=1.0)
            if key in self._targets:
                self._users[key] += 1
                return
            if not self._started:
                await self._spawn({key: target})
            else:
                await self._load_everywhere(key, target)
            self._targets[key] = target
            self._users[key] = 1

    async def _spawn(self, targets: dict[str, LoadTarget]) -> None:
        self._workers = [_WorkerProcess(targets, self._on_exit) for _ in range(self._count)]
        self._failures = [0] * self._count
        results = await asyncio.gather(*(w.start() for w in self._workers), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            await self._stop_workers()
            self._workers = []
            raise errors[0]
        self._started = True

    async def _load_everywhere(self, key: str, target: LoadTarget) -> None:
        """Load in every live worker; one that fails undoes the others. A worker that is
        restarting loads it when it is back (``_restart``)."""
        live = [w for w in self._workers if w.alive]
        results = await asyncio.gather(*(w.load(key, target) for w in live), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            loaded = [w for w, r in zip(live, results, strict=True) if r is None]
            await asyncio.gather(*(w.unload(key) for w in loaded), return_exceptions=True)
            raise errors[0]

    async def remove(self, key: str) -> None:
        """One user fewer of ``key``; the last one unloads it from every worker."""
        async with self._lock:
            if key not in self._users:
                return
            self._users[key] -= 1
            if self._users[key] > 0:
                return
            del self._users[key], self._targets[key]
            live = [w for w in self._workers if w.alive and key in w.keys]
            await asyncio.gather(*(w.unload(key) for w in live), return_exceptions=True)

    async def call(
        self, key: str, inputs: dict[str, np.ndarray], outputs: list[str]
    ) -> dict[str, np.ndarray]:
        worker = await self._acquire(key)
        try:
            return await worker.call(key, inputs, outputs)
        finally:
            self._changed.set()

    async def _acquire(self, key: str) -> _WorkerProcess:
        """The live worker holding ``key`` with the fewest calls in flight, below
        ``PIPELINE_DEPTH``."""
        while True:
            holders = [w for w in self._workers if w.alive and key in w.keys]
            if not holders:
                raise WorkerCrashed("no live worker process; one is restarting", retry_after=1.0)
            free = [w for w in holders if w.in_flight < PIPELINE_DEPTH]
            if free:
                return min(free, key=lambda w: w.in_flight)
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
        async with self._lock:  # the set of models holds still while the worker loads it
            worker = _WorkerProcess(dict(self._targets), self._on_exit)
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
        await self._stop_workers()

    async def _stop_workers(self) -> None:
        for worker in self._workers:
            worker.say_goodbye()
        await asyncio.gather(*(asyncio.to_thread(w.stop) for w in self._workers))


class _InPool:
    """One model version held by a pool of worker processes: its key there."""

    kind: ClassVar[str]

    def __init__(self, pool: ProcessPool, target: LoadTarget) -> None:
        self.pool = pool
        self._target = target
        self._key = key_of(target)

    @property
    def pids(self) -> list[int]:
        return self.pool.pids

    @property
    def is_alive(self) -> bool:
        return self.pool.is_alive

    @property
    def capacity(self) -> int:
        return self.pool.capacity

    async def start(self) -> None:
        """Load the model in every worker of the pool (spawning them on first use)."""
        await self.pool.add(self._key, self._target)

    async def predict(
        self, inputs: dict[str, np.ndarray], outputs: list[str]
    ) -> dict[str, np.ndarray]:
        return await self.pool.call(self._key, inputs, outputs)


class ProcessInstances(_InPool):
    """One model version in worker processes of its own: the pool is its alone."""

    kind = "processes"

    @property
    def restart_delays(self) -> list[float]:
        return self.pool.restart_delays

    async def close(self) -> None:
        await self.pool.close()


class SharedInstances(_InPool):
    """One model version in the server's shared pool, beside other small models."""

    kind = "shared"

    async def close(self) -> None:
        await self.pool.remove(self._key)
