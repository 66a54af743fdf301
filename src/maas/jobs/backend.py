"""Where a job's process runs: the ``JobBackend`` seam and its local implementation.

``LocalProcessBackend`` starts ``python -m maas.jobs.child WORKDIR`` as a new process
*group* with its own environment (BLAS and torch thread counts, offline Hugging Face),
so cancelling kills the job and anything it spawned (joblib or optuna workers). The
child speaks JSON lines on its stdout; its stderr (library warnings, tracebacks)
becomes log lines. ``maas.jobs.ray_backend`` implements the same seam on a Ray
cluster, running this same child process on a node; the manager does not change.
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

__all__ = [
    "JobBackend",
    "JobHandle",
    "JobLaunch",
    "LocalProcessBackend",
    "Message",
    "child_command",
    "job_environment",
    "parse_line",
    "signal_group",
]

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
    #: Whether the job runs on another machine: its payload then names inputs by store
    #: URL and digest, not by paths of this one (``maas.jobs.inputs``).
    portable: bool

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


def child_command(work_dir: Path) -> list[str]:
    """The job process's command line; it names the work directory, and with it the
    job's id, which is how ``kill_stale_process`` recognises a job's process."""
    return [sys.executable, "-m", "maas.jobs.child", str(work_dir)]


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
        signal_group(self._process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(self._process.wait(), grace_s)
        except TimeoutError:
            signal_group(self._process.pid, signal.SIGKILL)
            await self._process.wait()
        signal_group(self._process.pid, signal.SIGKILL)  # stragglers of the group


def signal_group(pgid: int, sig: signal.Signals) -> None:
    """Signal a job's whole process group; one already gone is no error."""
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
            message = parse_line(raw, structured=structured)
            if message is not None:
                await queue.put(message)
    finally:
        await queue.put(None)


def parse_line(raw: bytes, *, structured: bool) -> Message | None:
    """One line of the child's output as a message: a JSON message of its stdout
    (``structured``), else a log line; ``None`` for a blank line."""
    line = raw.decode("utf-8", "replace").rstrip("\n")
    if structured:
        try:
            message = json.loads(line)
        except ValueError:
            message = None
        if isinstance(message, dict) and isinstance(message.get("type"), str):
            return message
    if line.strip():
        return {"type": "log", "line": line[:4000]}
    return None


class LocalProcessBackend:
    """Each job a child process of this server, in its own process group."""

    portable = False

    async def start(self, launch: JobLaunch) -> JobHandle:
        launch.work_dir.mkdir(parents=True, exist_ok=True)
        (launch.work_dir / "payload.json").write_text(json.dumps(launch.payload))
        process = await asyncio.create_subprocess_exec(
            *child_command(launch.work_dir),
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
    signal_group(pid, signal.SIGKILL)
    return True
