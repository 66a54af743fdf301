"""Waiting in a test for a state another task or process reaches, not for a guessed time."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def until(
    condition: Callable[[], object], timeout_s: float = 30, step_s: float = 0.1
) -> None:
    """Check ``condition`` every ``step_s`` until it holds; fail the test if it never
    does within ``timeout_s``. For states that raise no event of their own (a health
    round's reconnect, a job's record, a followed change)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        assert loop.time() < deadline, f"condition never became true in {timeout_s:g} s"
        await asyncio.sleep(step_s)
