"""What an HTTP request says about its own lifetime: its timeout and its disconnect.

The serving layer enforces both (``ModelManager.predict``); this module only reads
them off the request, so every inference router reads them the same way.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.requests import Request

from maas.errors import InvalidInput

__all__ = ["TIMEOUT_HEADER", "disconnect_of", "requested_timeout"]

TIMEOUT_HEADER = "x-maas-timeout"


def _seconds(value: Any, source: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InvalidInput(f"{source} must be a number of seconds")
    try:
        seconds = float(value)
    except ValueError:
        raise InvalidInput(f"{source} must be a number of seconds, got {value!r}") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise InvalidInput(f"{source} must be a positive number of seconds")
    return seconds


def requested_timeout(parameters: Mapping[str, Any], headers: Mapping[str, str]) -> float | None:
    """The caller's timeout in seconds: V2 ``parameters.timeout``, else the
    ``X-Maas-Timeout`` header, else None (the server's default applies)."""
    if parameters.get("timeout") is not None:
        return _seconds(parameters["timeout"], "parameters.timeout")
    header = headers.get(TIMEOUT_HEADER)
    if header is not None:
        return _seconds(header.strip(), "X-Maas-Timeout")
    return None


def disconnect_of(request: Request) -> Callable[[], Awaitable[None]]:
    """An awaitable factory that completes when the client hangs up.

    Awaits the ASGI ``receive()`` for ``http.disconnect`` (the body is already read)
    rather than polling ``request.is_disconnected()``.
    """
    receive = request.receive

    async def disconnected() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    return disconnected
