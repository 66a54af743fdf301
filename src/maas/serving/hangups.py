"""What a caller hanging up does to its work: it stops waiting, and queued work leaves.

``disconnected`` is an awaitable factory that completes when the client hangs up
(``maas.api.lifetime.disconnect_of``). Watching it costs a task, so the serving layer
watches only where a hang-up can save something: while a request waits in a queue
(``watch``), and around work that would otherwise run on for nobody
(``unless_disconnected``). A request that goes straight to a free instance is not
watched: its answer is dropped if nobody is there to take it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from maas.errors import ClientDisconnected

__all__ = ["Disconnected", "unless_disconnected", "watch"]

T = TypeVar("T")
Disconnected = Callable[[], Awaitable[Any]]


def watch(disconnected: Disconnected, on_hangup: Callable[[], None]) -> asyncio.Task[Any]:
    """Call ``on_hangup`` when the client hangs up; cancel the returned task to stop."""

    def done(watcher: asyncio.Task[Any]) -> None:
        if not watcher.cancelled() and watcher.exception() is None:
            on_hangup()

    watcher = asyncio.ensure_future(disconnected())
    watcher.add_done_callback(done)
    return watcher


async def unless_disconnected(work: Awaitable[T], disconnected: Disconnected) -> T:
    """Await ``work`` unless ``disconnected`` completes first; then cancel ``work`` and
    raise ``ClientDisconnected``."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
    if task.cancelled() or not task.done():
        await asyncio.gather(task, return_exceptions=True)
        raise ClientDisconnected()
    return task.result()
