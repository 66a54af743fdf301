"""Where a job's process runs: the ``JobBackend`` seam and its local implementation.

``LocalProcessBackend`` starts ``python -m maas.jobs.child WORKDIR`` as a new process
*group* with its own environment (BLAS and torch thread counts, offline Hugging Face),
so cancelling kills the job and anything it spawned (joblib or optuna workers). The
child speaks JSON lines on its stdout; its stderr (library warnings, tracebacks)
becomes log lines. A Ray backend would implement the same two methods with a remote
task and an actor's message stream; the manager would not change.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

__all__ = ["JobBackend", "JobHandle", "JobLaunch", "LocalProcessBackend", "Message"]

#: What a job says: ``{"type": "log" | "progress" | "result" | "error", ...}``.
Message = dict[str, Any]

_MAX_LINE = 1024 * 1024


@dataclass(frozen=True)
class JobLaunch:
    job_id: str
    work_dir: Path
    payload: dict[str, Any]
    threads: int


class JobHandle(Protocol):
    @property
    def pid(self) -> int | None: ...

    def messages(self) -> AsyncIterator[Message]:
        """Everything the job says, in order, until it exits."""
        ...

    async def wait(self) -> int:
        """The exit status (negative: killed by that signal)."""
        ...

    async def stop(self, grace_s: float) -> None:
        """Stop the job and all it started: SIGTERM, then SIGKILL after ``grace_s``."""
        ...


class JobBackend(Protocol):
    async def start(self, launch: JobLaunch) -> JobHandle: ...


def job_environment(threads: int) -> dict[str, str]:
    """The child's environment: this one, with thread counts pinned and no network."""
    env = dict(os.environ)
    for name in (
        "OMP_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "MKL_NUM_THREADS",
        "NUMEXPR_NUM_THREADS",
        "VECLIB_MAXIMUM_THREADS",
    ):
        env[name] = str(threads)
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        TQDM_DISABLE="1",
        PYTHONUNBUFFERED="1",
    )
    return env


class _ProcessHandle:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process

    @property
    def pid(self) -> int | None:
        return self._process.pid

    async def messages(self) -> AsyncIterator[Message]:
        queue: asyncio.Queue[Message | None] = asyncio.Queue()
        assert self._process.stdout is not None and self._process.stderr is not None
        readers = [
            asyncio.create_task(_pump(self._process.stdout, queue, structured=True)),
            asyncio.create_task(_pump(self._process.stderr, queue, structured=False)),
        ]
        try:
            open_streams = len(readers)
            while open_streams:
                message = await queue.get()
                if message is None:
                    open_streams -= 1
                    continue
                yield message
        finally:
            for reader in readers:
                reader.cancel()

    async def wait(self) -> int:
        return await self._process.wait()

    async def stop(self, grace_s: float) -> None:
        if self._process.returncode is not None:
            return
        _signal_group(self._process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(self._process.wait(), grace_s)
        except TimeoutError:
            _signal_group(self._process.pid, signal.SIGKILL)
            await self._process.wait()
        _signal_group(self._process.pid, signal.SIGKILL)  # stragglers of the group


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def _pump(
    stream: asyncio.StreamReader, queue: asyncio.Queue[Message | None], *, structured: bool
) -> None:
    try:
        while True:
            try:
                raw = await stream.readline()
            except ValueError:  # a line over the limit: skip it
                raw = b"<line too long>\n"
            if not raw:
                break
            line = raw.decode("utf-8", "replace").rstrip("\n")
            if structured:
                try:
                    message = json.loads(line)
                except ValueError:
                    message = None
                if isinstance(message, dict) and isinstance(message.get("type"), str):
                    await queue.put(message)
                    continue
            if line.strip():
                await queue.put({"type": "log", "line": line[:4000]})
    finally:
        await queue.put(None)


class LocalProcessBackend:
    """Each job a child process of this server, in its own process group."""

    async def start(self, launch: JobLaunch) -> JobHandle:
        launch.work_dir.mkdir(parents=True, exist_ok=True)
        (launch.work_dir / "payload.json").write_text(json.dumps(launch.payload))
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "maas.jobs.child",
            str(launch.work_dir),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=job_environment(launch.threads),
            start_new_session=True,
            limit=_MAX_LINE,
        )
        return _ProcessHandle(process)


def kill_stale_process(pid: int, job_id: str) -> bool:
    """Kill the group of a job process a crashed server left behind, if ``pid`` is still
    that job (its command line names the job's directory), never an unrelated process."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode("utf-8", "replace")
    except OSError:
        return False
    if "maas.jobs.child" not in cmdline or job_id not in cmdline:
        return False
    _signal_group(pid, signal.SIGKILL)
    return True
