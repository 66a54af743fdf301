"""``python -m maas ...`` in a process forked from an interpreter that has imported maas
already: the real CLI and server code in a process of its own, without the second of
interpreter start and imports each new interpreter spends.

A test run starts about ninety servers on two cores; each import of maas, FastAPI,
SQLAlchemy and pydantic cost about 0.7 CPU-s of a 1 CPU-s start. One forkserver
(``multiprocessing``'s, per xdist worker) imports them once; each server is a fork of
it that sets its environment, working directory, argv and output, then calls the same
``maas.cli.main.main`` that ``python -m maas`` calls. Nothing of the test process is in
it: the forkserver is a fresh interpreter that only imported maas modules, which read
no environment when imported (``maas.config`` reads it, when settings are made).

``ForkedProcess`` answers as much of ``subprocess.Popen`` as the tests use (``pid``,
``poll``, ``wait``, ``send_signal``, ``kill``, ``returncode``, ``stdout``), with the
same return codes: a negative signal number for a process a signal ended; ``run_maas``
is ``subprocess.run`` of a CLI call. Tests of the process start itself (its first
lines, a port in use) keep starting a new interpreter
(``start_server(fresh_interpreter=True)``). ``tests/integration/test_forked.py`` checks
that a fork answers as the new interpreter does.
"""

from __future__ import annotations

import atexit
import importlib.util
import io
import multiprocessing
import multiprocessing.forkserver
import os
import signal
import subprocess
import sys
import threading
import types
from collections.abc import Mapping, Sequence
from multiprocessing import reduction
from typing import IO, Any

__all__ = ["ForkedProcess", "can_fork", "run_maas"]

#: What the forkserver imports once: the CLI, the server and the app they build.
_PRELOAD = ["maas.cli.main", "maas.cli.serve", "maas.cli.drain", "maas.api.app", "uvicorn"]
#: Environment that libraries among those read when they are imported, not later:
#: prometheus_client picks its multiprocess mode, OpenBLAS its threads. A process whose
#: environment differs from the forkserver's in one of them needs an interpreter of its own.
IMPORT_TIME_ENV = (
    "PROMETHEUS_MULTIPROC_DIR",
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
)

_lock = threading.Lock()
_context: Any = None
_running: set[ForkedProcess] = set()
#: ``IMPORT_TIME_ENV`` as the forkserver got it, once it is started.
_forkserver_env: dict[str, str | None] | None = None


def _import_time_env(env: Mapping[str, str]) -> dict[str, str | None]:
    return {name: env.get(name) for name in IMPORT_TIME_ENV}


def can_fork(env: Mapping[str, str]) -> bool:
    """Whether a process with ``env`` may be forked from the forkserver (which starts,
    if it has not yet, with this process's environment)."""
    return _import_time_env(env) == (_forkserver_env or _import_time_env(os.environ))


def _forkserver() -> Any:
    global _context, _forkserver_env
    with _lock:
        if _context is None:
            _forkserver_env = _import_time_env(os.environ)
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(_PRELOAD)
            # rich fixes a console's width when COLUMNS is set as it is made (the CLI's
            # are made at import): without it, each child's own COLUMNS decides.
            sized = {
                name: os.environ.pop(name) for name in ("COLUMNS", "LINES") if name in os.environ
            }
            try:
                multiprocessing.forkserver.ensure_running()
            finally:
                os.environ.update(sized)
            _context = context
            atexit.register(_kill_leftovers)
        return _context


def _kill_leftovers() -> None:
    """A server a failed test left running would keep this worker from exiting:
    multiprocessing joins its children at exit (this runs before, atexit being LIFO)."""
    for process in list(_running):
        process.kill()
        process.wait(10)


def _run_maas(
    argv: list[str], env: dict[str, str], cwd: str, output: Any, errors: Any | None
) -> None:
    """In the forked child: what ``python -m maas ARGV`` would be, then its exit code."""
    out_fd = output.detach()
    err_fd = errors.detach() if errors is not None else os.dup(out_fd)
    for fd, target in ((out_fd, 1), (err_fd, 2)):
        os.dup2(fd, target)
        os.close(fd)
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), line_buffering=True)
    sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), line_buffering=True)
    # What ``python -m maas`` sets up (runpy): argv[0] and a ``__main__`` of package
    # maas, from which click names the program in its messages ("python -m maas").
    entry = importlib.util.find_spec("maas.__main__")
    assert entry is not None and entry.origin is not None
    main_module = types.ModuleType("__main__")
    main_module.__file__, main_module.__package__, main_module.__spec__ = (
        entry.origin,
        "maas",
        entry,
    )
    sys.modules["__main__"] = main_module
    sys.argv = [entry.origin, *argv]
    from maas.cli.main import main

    main()


class ForkedProcess:
    """``python -m maas ARGV`` forked from the forkserver; its output readable as text
    from ``stdout`` (with stderr, unless ``separate_stderr`` gives stderr its own)."""

    def __init__(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        cwd: str | None = None,
        *,
        separate_stderr: bool = False,
    ) -> None:
        out_read, out_write = os.pipe()
        err_read, err_write = os.pipe() if separate_stderr else (None, None)
        errors = reduction.DupFd(err_write) if err_write is not None else None
        self._process = _forkserver().Process(
            target=_run_maas,
            args=(list(argv), dict(env), cwd or os.getcwd(), reduction.DupFd(out_write), errors),
        )
        try:
            self._process.start()
        finally:
            os.close(out_write)
            if err_write is not None:
                os.close(err_write)
        self.args = [sys.executable, "-m", "maas", *argv]
        self.pid: int = self._process.pid
        # Closed by their owner, as a Popen's pipes are.
        self.stdout: IO[str] | None = open(out_read, encoding="utf-8", errors="replace")  # noqa: SIM115
        self.stderr: IO[str] | None = (
            open(err_read, encoding="utf-8", errors="replace") if err_read is not None else None  # noqa: SIM115
        )
        _running.add(self)

    @property
    def returncode(self) -> int | None:
        code = self._process.exitcode
        if code is not None:
            _running.discard(self)
        return code  # type: ignore[no-any-return]

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        self._process.join(timeout)
        code = self.returncode
        if code is None:
            raise subprocess.TimeoutExpired(self.args, timeout or 0)
        return code

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def run_maas(
    args: Sequence[str], env: Mapping[str, str], timeout: float = 60, check: bool = False
) -> subprocess.CompletedProcess[str]:
    """``subprocess.run([python, "-m", "maas", *args], capture_output=True, text=True)``,
    forked where ``env`` allows it."""
    if not can_fork(env):
        command = [sys.executable, "-m", "maas", *args]
        return subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, env=dict(env), check=check
        )
    process = ForkedProcess(args, env, separate_stderr=True)
    streams = [process.stdout, process.stderr]
    texts = ["", ""]

    def read(index: int) -> None:
        stream = streams[index]
        assert stream is not None
        texts[index] = stream.read()

    readers = [threading.Thread(target=read, args=(i,), daemon=True) for i in (0, 1)]
    for reader in readers:
        reader.start()
    try:
        code = process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)
        raise
    finally:
        for reader in readers:
            reader.join(10)
        for stream in streams:
            if stream is not None:
                stream.close()
    result = subprocess.CompletedProcess(process.args, code, texts[0], texts[1])
    if check:
        result.check_returncode()
    return result
