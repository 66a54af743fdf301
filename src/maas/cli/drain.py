"""The graceful drain of ``maas serve``: one deadline from SIGTERM to exit.

On SIGTERM, readiness and new inference answer 503 at once (``on_drain``). The listener
stays open for ``drain_grace_s`` so that callers and load balancers get that 503 rather
than a refused connection; then uvicorn closes it and lets in-flight requests finish,
until the deadline less a teardown share; then the lifespan teardown (usage records,
models, jobs) runs until the deadline itself, and kills worker processes past it. A
watchdog thread exits the process a moment after the deadline if anything still blocks
(a model call stuck in a thread, say). Ctrl-C skips the grace: nobody routes to a
developer's terminal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from types import FrameType
from typing import Any

import uvicorn

from maas.config import ServingSettings
from maas.serving.process_workers import kill_worker_processes

__all__ = ["DrainPlan", "DrainingServer"]

log = logging.getLogger("maas")

#: The teardown's share of the drain timeout, its floor and its cap in seconds. The
#: floor fits a real teardown (an idle server's takes 1.1-1.2 s: usage flushed, worker
#: processes stopped), so a short timeout cuts requests rather than the teardown; the
#: requests still get at least half of any timeout.
_TEARDOWN_SHARE = 0.2
_TEARDOWN_MIN_S = 2.0
_TEARDOWN_MAX_S = 5.0
#: How long after the deadline the watchdog waits for an orderly exit before forcing one.
_HARD_EXIT_MARGIN_S = 1.0


@dataclass(frozen=True)
class DrainPlan:
    """When each phase of a drain that began at ``started`` (``time.monotonic()``) ends."""

    started: float
    grace_s: float
    timeout_s: float

    @property
    def deadline(self) -> float:
        """The process has exited by then."""
        return self.started + self.timeout_s

    @property
    def grace_end(self) -> float:
        """The listener closes then; until then new requests get 503."""
        return min(self.started + self.grace_s, self.deadline)

    @property
    def requests_end(self) -> float:
        """Requests still running then are cancelled, leaving the teardown its share."""
        share = min(_TEARDOWN_MAX_S, max(_TEARDOWN_MIN_S, self.timeout_s * _TEARDOWN_SHARE))
        share = min(share, self.timeout_s / 2)
        return max(self.grace_end, self.deadline - share)


class DrainingServer(uvicorn.Server):
    """uvicorn, draining within one deadline (module docstring).

    ``open_app()`` opens the services and yields the app over them; it runs inside
    uvicorn's signal capture, so a SIGTERM while models load starts the drain too, and
    its exit (the teardown) runs after the last connection closed.
    ``on_drain(deadline)`` runs in the signal handler, so it must only set flags.
    ``on_exit()`` runs once the teardown is over (or by the watchdog): uvicorn then
    re-raises the signal, so nothing after ``run`` is reached on SIGTERM.
    """

    def __init__(
        self,
        config: uvicorn.Config,
        settings: ServingSettings,
        *,
        open_app: Callable[[], AbstractAsyncContextManager[Any]],
        on_drain: Callable[[float], None],
        on_exit: Callable[[], None],
    ) -> None:
        super().__init__(config)
        self._open_app = open_app
        self._settings = settings
        self._on_drain = on_drain
        self._on_exit = on_exit
        self._plan: DrainPlan | None = None
        self._armed = threading.Event()
        self._cut_grace: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def drain_deadline(self) -> float | None:
        """``time.monotonic()`` by which the process exits, once a drain has begun."""
        return self._plan.deadline if self._plan is not None else None

    async def serve(self, sockets: list[Any] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        self._cut_grace = asyncio.Event()
        threading.Thread(target=self._watchdog, name="maas-drain-watchdog", daemon=True).start()
        with self.capture_signals():
            try:
                async with self._open_app() as app:
                    self.config.app = app
                    self.config.lifespan = "off"  # the services are open already
                    # uvicorn's serve() less its own signal capture, which must span
                    # the opening and the teardown of the services as well.
                    await self._serve(sockets)
            finally:
                self._on_exit()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._plan is None:
            grace_s = self._settings.drain_grace_s if sig == signal.SIGTERM else 0.0
            self._plan = DrainPlan(time.monotonic(), grace_s, self._settings.drain_timeout_s)
            self._on_drain(self._plan.deadline)
            self._armed.set()  # the watchdog's lock is never held by this thread
        elif self._loop is not None and self._cut_grace is not None:
            # A second signal ends the grace now (uvicorn forces exit on a second ^C).
            self._loop.call_soon_threadsafe(self._cut_grace.set)
        super().handle_exit(sig, frame)

    async def shutdown(self, sockets: list[Any] | None = None) -> None:
        plan = self._plan or DrainPlan(time.monotonic(), 0.0, self._settings.drain_timeout_s)
        grace_s = plan.grace_end - time.monotonic()
        if grace_s > 0 and self._cut_grace is not None and not self.force_exit:
            log.info("draining: answering 503 for %.1f s before closing the listener", grace_s)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._cut_grace.wait(), grace_s)
        # Read by uvicorn's shutdown: how long open connections may take to finish. uvicorn
        # annotates it int but only hands it to asyncio.timeout, which takes a float.
        remaining_s = max(0.0, plan.requests_end - time.monotonic())
        self.config.timeout_graceful_shutdown = remaining_s  # type: ignore[assignment]
        await super().shutdown(sockets)

    def _watchdog(self) -> None:
        """Daemon thread: once draining, force the exit shortly after the deadline."""
        self._armed.wait()
        assert self._plan is not None
        time.sleep(max(0.0, self._plan.deadline + _HARD_EXIT_MARGIN_S - time.monotonic()))
        log.error("the drain deadline passed and the process still runs: exiting now")
        kill_worker_processes()
        self._on_exit()
        os._exit(1)
