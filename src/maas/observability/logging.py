"""JSON log lines that carry the id of the request they were written for.

One JSON object per line (``ts``, ``level``, ``logger``, ``message``, ``request_id``,
and ``exc`` with the traceback), so a log pipeline needs no parsing rules and a 5xx
body's ``request_id`` finds its traceback. The request id lives in a context
variable: whoever starts a request sets it once (``bind_request_id``) and every log
call below, in the same task or in ``asyncio.to_thread``, carries it.
"""

from __future__ import annotations

import logging
import time
from contextvars import ContextVar, Token

import orjson

__all__ = ["REQUEST_ID", "JsonFormatter", "bind_request_id", "configure_logging"]

#: The id of the request being served in this context, or ``None`` outside one.
REQUEST_ID: ContextVar[str | None] = ContextVar("maas_request_id", default=None)


def bind_request_id(request_id: str) -> Token[str | None]:
    """Set the request id of this context; ``REQUEST_ID.reset(token)`` undoes it."""
    return REQUEST_ID.set(request_id)


class JsonFormatter(logging.Formatter):
    """A ``logging.Formatter`` writing one JSON object per record."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = REQUEST_ID.get()
        if request_id is not None:
            entry["request_id"] = request_id
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def configure_logging(level: str, *, json: bool = True) -> None:
    """Route the root logger to stderr, as JSON lines or as plain text."""
    handler = logging.StreamHandler()
    if json:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
