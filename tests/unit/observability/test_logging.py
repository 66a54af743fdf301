"""JSON log lines with the request id of their context."""

from __future__ import annotations

import asyncio
import logging

import orjson
import pytest

from maas.observability.logging import REQUEST_ID, JsonFormatter, bind_request_id


def _line(message: str, *, exc: BaseException | None = None) -> dict[str, object]:
    exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    record = logging.LogRecord("maas.test", logging.WARNING, __file__, 1, message, (), exc_info)
    parsed: dict[str, object] = orjson.loads(JsonFormatter().format(record))
    return parsed


def test_a_line_is_one_json_object_without_a_request_id_outside_a_request() -> None:
    line = _line('hello "quoted"\nnext')
    assert line["message"] == 'hello "quoted"\nnext'
    assert line["level"] == "warning"
    assert line["logger"] == "maas.test"
    assert str(line["ts"]).endswith("Z")
    assert "request_id" not in line


def test_the_request_id_follows_the_context_into_threads() -> None:
    async def serve() -> dict[str, object]:
        token = bind_request_id("req-42")
        try:
            return await asyncio.to_thread(_line, "in a worker thread")
        finally:
            REQUEST_ID.reset(token)

    assert asyncio.run(serve())["request_id"] == "req-42"
    assert REQUEST_ID.get() is None


def test_a_traceback_goes_into_exc() -> None:
    with pytest.raises(ValueError, match="boom") as caught:
        raise ValueError("boom")
    line = _line("failed", exc=caught.value)
    assert "ValueError: boom" in str(line["exc"])
