"""Jobs on a Ray cluster: ``RayJobBackend``, the ``JobBackend`` of a server with
``cluster.ray_address``.

Each job is one Ray actor (``JobRunner``) asking the job's resources
(``jobs.threads_per_job`` CPUs, ``jobs.memory_bytes``), which Ray places on a node
that has them. On its node the actor fetches the job's inputs from the stores (the
payload names them by store URL and digest, never by a path of the gateway's disk:
``maas.jobs.inputs.localize``) and runs the same ``python -m maas.jobs.child`` process
as a local job, in a node-local work directory, as its own process group with the same
environment; so the job kinds do not know where they run.

The gateway's ``JobManager`` sees the same ``JobHandle``: it polls the actor for the
messages the child said after the last one it has (``poll`` waits on the node up to a
second for news, so logs arrive at once without a busy loop), and before it hands on a
``result`` it copies the files the result names from the node into the gateway's work
directory, in chunks through Ray's object store, where ``register_results`` reads them
as for a local job. The first log line of a job says on which node it runs.

A request no live node can hold fails the job at once with ``placement_infeasible``
naming what was asked and what the largest node has; an actor not placed within
``cluster.ready_timeout_s`` (the cluster's room is taken) fails the same way, instead
of pending forever. Cancel stops the child's process group on the node (SIGTERM, then
SIGKILL after the grace), then the actor is killed. The gateway owns its actors
(non-detached): if it dies Ray kills them, and the child, whose parent is then gone,
exits on its own (``maas.jobs.child``).

``ray`` is imported only here and in ``maas.serving.ray_instances``, and only once a
cluster address is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, Any

from maas.config import JobsSettings
from maas.errors import MaasError, PlacementInfeasible, WorkerCrashed
from maas.jobs.backend import (
    JobHandle,
    JobLaunch,
    Message,
    child_command,
    job_environment,
    parse_line,
    signal_group,
)
from maas.jobs.inputs import localize
from maas.jobs.results import artifact_path
from maas.serving.ray_instances import RayCluster, room

__all__ = ["JobRunner", "RayJobBackend"]

log = logging.getLogger("maas.jobs")

#: Longest a poll waits on the node for something new before answering "nothing yet".
_POLL_WAIT_S = 1.0
#: Bytes of a result file per call: a fine-tuned model (~100 MB) is a dozen calls.
_CHUNK = 8 * 1024 * 1024
_MAX_LINE = 1024 * 1024
#: Calls an actor answers at once: a waiting poll must not hold up a stop or a read.
_CONCURRENCY = 4
#: Extra time a stop may take on top of the grace before the actor is killed outright.
_STOP_SLACK_S = 10.0


class JobRunner:
    """The body of one job's actor, on its node: fetches the inputs, runs the child
    process and keeps everything it says, in order, for the gateway to poll."""

    def __init__(self, job_id: str, payload: dict[str, Any], threads: int) -> None:
        self._payload = payload
        self._threads = threads
        # The job id in the directory name: kill_stale_process recognises the child by it.
        self._work_dir = Path(tempfile.mkdtemp(prefix=f"maas-job-{job_id}-"))
        self._messages: list[Message] = []
        self._status: int | None = None
        self._changed = threading.Condition()
        self._process: subprocess.Popen[bytes] | None = None

    def where(self) -> dict[str, Any]:
        """The node this actor runs on (answered once placed)."""
        import ray

        return {
            "node_id": ray.get_runtime_context().get_node_id(),
            "node_ip": ray.util.get_node_ip_address(),
            "host": socket.gethostname(),
        }

    def start(self) -> int | None:
        """Fetch the inputs and start the child; its pid, or ``None`` when an input
        could not be fetched (then the job has already ended with that error)."""
        try:
            payload = localize(self._payload)
        except MaasError as exc:
            self._end({"type": "error", "code": exc.code, "message": exc.message}, 1)
            return None
        except Exception as exc:
            message = f"fetching the job's inputs on its node failed: {type(exc).__name__}: {exc}"
            self._end({"type": "error", "code": "job_failed", "message": message[:2000]}, 1)
            return None
        (self._work_dir / "payload.json").write_text(json.dumps(payload))
        process = subprocess.Popen(
            child_command(self._work_dir),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=job_environment(self._threads),
            start_new_session=True,
        )
        self._process = process
        assert process.stdout is not None and process.stderr is not None
        readers = [
            threading.Thread(target=self._read, args=(process.stdout, True), daemon=True),
            threading.Thread(target=self._read, args=(process.stderr, False), daemon=True),
        ]
        for reader in readers:
            reader.start()
        threading.Thread(target=self._reap, args=(process, readers), daemon=True).start()
        return process.pid

    def _read(self, stream: IO[bytes], structured: bool) -> None:
        while raw := stream.readline(_MAX_LINE):
            if not raw.endswith(b"\n") and len(raw) >= _MAX_LINE:  # skip the rest of it
                while (rest := stream.readline(_MAX_LINE)) and not rest.endswith(b"\n"):
                    pass
                raw = b"<line too long>\n"
            message = parse_line(raw, structured=structured)
            if message is not None:
                with self._changed:
                    self._messages.append(message)
                    self._changed.notify_all()

    def _reap(self, process: subprocess.Popen[bytes], readers: list[threading.Thread]) -> None:
        for reader in readers:
            reader.join()
        self._end(None, process.wait())

    def _end(self, message: Message | None, status: int) -> None:
        with self._changed:
            if message is not None:
                self._messages.append(message)
            self._status = status
            self._changed.notify_all()

    def poll(self, after: int, wait_s: float) -> tuple[list[Message], int | None]:
        """The messages after the first ``after``, and the exit status once the child
        has ended and said everything; waits up to ``wait_s`` for either."""
        with self._changed:
            if len(self._messages) <= after and self._status is None:
                self._changed.wait(wait_s)
            return self._messages[after:], self._status

    def stop(self, grace_s: float) -> None:
        """SIGTERM the child's process group, SIGKILL after ``grace_s``."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        signal_group(process.pid, signal.SIGTERM)
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            signal_group(process.pid, signal.SIGKILL)
            process.wait()
        signal_group(process.pid, signal.SIGKILL)  # stragglers of the group

    def read(self, name: str, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes at ``offset`` of the output file ``name``."""
        with artifact_path(self._work_dir, name).open("rb") as file:
            file.seek(offset)
            return file.read(size)

    def clean(self) -> None:
        shutil.rmtree(self._work_dir, ignore_errors=True)


class RayJobBackend:
    """Each job an actor on the cluster (see the module's docstring)."""

    #: Inputs travel as store URLs and digests: the job's node fetches them itself.
    portable = True

    def __init__(self, cluster: RayCluster, settings: JobsSettings) -> None:
        self._cluster = cluster
        self._settings = settings
        self._actor_class: Any = None

    async def start(self, launch: JobLaunch) -> JobHandle:
        await self._cluster.connect()
        ask: dict[str, float] = {"CPU": float(launch.threads)}
        if self._settings.memory_bytes is not None:
            ask["memory"] = float(self._settings.memory_bytes)
        await asyncio.to_thread(self._check_fits, ask)
        if self._actor_class is None:
            import ray

            self._actor_class = ray.remote(JobRunner)
        options: dict[str, Any] = {
            "num_cpus": ask["CPU"],
            "max_restarts": 0,  # a restarted actor would not have the job's process
            "max_task_retries": 0,
            "max_concurrency": _CONCURRENCY,
        }
        if "memory" in ask:
            options["memory"] = int(ask["memory"])
        actor = self._actor_class.options(**options).remote(
            launch.job_id, launch.payload, launch.threads
        )
        timeout_s = self._cluster.settings.ready_timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                where: dict[str, Any] = await actor.where.remote()
            pid: int | None = await actor.start.remote()
        except TimeoutError:
            await asyncio.to_thread(_kill, actor)
            raise PlacementInfeasible(
                f"the job was not placed on the Ray cluster within {timeout_s:g} s "
                f"(it asks {_describe(ask)}): the cluster's free resources are taken by "
                "other jobs or models",
                details={"asked": ask, "ready_timeout_s": timeout_s},
            ) from None
        except Exception as exc:  # the actor died starting (its worker, its node)
            await asyncio.to_thread(_kill, actor)
            raise WorkerCrashed(
                f"the job's Ray actor failed to start: {type(exc).__name__}: {exc}"[:2000]
            ) from None
        except BaseException:
            await asyncio.to_thread(_kill, actor)
            raise
        log.info(
            "job %s runs on Ray node %s (%s, host %s), pid %s",
            launch.job_id,
            where["node_id"],
            where["node_ip"],
            where["host"],
            pid,
        )
        launch.work_dir.mkdir(parents=True, exist_ok=True)
        return _RayJobHandle(self._cluster, actor, where, pid, launch.work_dir, self._settings)

    def _check_fits(self, ask: dict[str, float]) -> None:
        """Fail now, not never, when no live node could hold the job (blocking)."""
        nodes = self._cluster.live_nodes()
        if room(nodes, ask) >= 1:
            return
        cpus = max((node.get("CPU", 0.0) for node in nodes), default=0.0)
        memory = max((node.get("memory", 0.0) for node in nodes), default=0.0)
        raise PlacementInfeasible(
            f"the job asks {_describe(ask)} (jobs.threads_per_job, jobs.memory_bytes) but no "
            f"live node of the Ray cluster has that: of its {len(nodes)} nodes the largest "
            f"has {cpus:g} CPUs and the most memory is {memory / 2**30:.1f} GiB; ask less "
            "or add a larger node",
            details={"asked": ask, "largest": {"CPU": cpus, "memory": memory}},
        )


class _RayJobHandle:
    """The gateway's view of one job's actor (``JobHandle``)."""

    def __init__(
        self,
        cluster: RayCluster,
        actor: Any,
        where: dict[str, Any],
        pid: int | None,
        work_dir: Path,
        settings: JobsSettings,
    ) -> None:
        self._cluster = cluster
        self._actor = actor
        self._where = where
        self._pid = pid
        self._work_dir = work_dir
        self._settings = settings
        self._status: int | None = None
        self._released = False

    @property
    def pid(self) -> int | None:
        """The job process's pid, on its node."""
        return self._pid

    async def messages(self) -> AsyncIterator[Message]:
        where = self._where
        yield {
            "type": "log",
            "line": f"running on Ray node {where['node_id']} ({where['node_ip']}, "
            f"host {where['host']}), pid {self._pid}",
        }
        seen = 0
        while self._status is None:
            try:
                batch, status = await self._actor.poll.remote(seen, _POLL_WAIT_S)
            except self._cluster.lost:
                self._status = -signal.SIGKILL
                if not self._released:  # not killed by us: by Ray, or with its node
                    yield {"type": "log", "line": "the job's Ray actor was lost (its node died?)"}
                return
            seen += len(batch)
            for message in batch:
                if message["type"] == "result":
                    message = await self._fetch_outputs(message)
                yield message
            self._status = status

    async def _fetch_outputs(self, result: Message) -> Message:
        """Copy the files ``result`` names from the node into the gateway's work
        directory; an error message instead if that fails."""
        for artifact in result.get("artifacts", []):
            name = str(artifact.get("file", ""))
            if Path(name).name != name or name in ("", ".", ".."):
                continue  # register_results refuses it with its own error
            try:
                await self._fetch(name)
            except Exception as exc:
                return {
                    "type": "error",
                    "code": "job_failed",
                    "message": f"copying {name} from the job's node failed: {exc}"[:2000],
                }
        return result

    async def _fetch(self, name: str) -> None:
        target = self._work_dir / name
        with target.open("wb") as file:
            offset = 0
            while chunk := await self._actor.read.remote(name, offset, _CHUNK):
                await asyncio.to_thread(file.write, chunk)
                offset += len(chunk)

    async def wait(self) -> int:
        """The exit status, once everything the job said is read; then the actor and its
        node-local work directory are removed."""
        while self._status is None:  # messages() not read to the end: drain them
            async for _ in self.messages():
                pass
        await self._release()
        return self._status

    async def stop(self, grace_s: float) -> None:
        """Stop the child's process group on the node; the actor is removed once its
        last messages are read (``wait``), or at once if it does not answer."""
        if self._released:
            return
        gone: tuple[type[Exception], ...] = (TimeoutError, *self._cluster.lost)
        try:
            async with asyncio.timeout(grace_s + _STOP_SLACK_S):
                await self._actor.stop.remote(grace_s)
        except gone:
            await self._release()  # the child exits when its parent, the actor, is gone

    async def _release(self) -> None:
        if self._released:
            return
        self._released = True
        with contextlib.suppress(Exception):
            async with asyncio.timeout(_STOP_SLACK_S):
                await self._actor.clean.remote()
        await asyncio.to_thread(_kill, self._actor)


def _kill(actor: Any) -> None:
    import ray

    with contextlib.suppress(Exception):  # already gone is gone
        ray.kill(actor, no_restart=True)


def _describe(ask: dict[str, float]) -> str:
    parts = [f"{ask['CPU']:g} CPUs"]
    if "memory" in ask:
        parts.append(f"{ask['memory'] / 2**30:.1f} GiB of memory")
    return " and ".join(parts)
