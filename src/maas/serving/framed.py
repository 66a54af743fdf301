"""Calls to a model held by another process, over one framed byte stream.

Two transports carry them: the pipes of a local worker process (``process_workers``)
and the TCP socket of a Ray replica (``replica_socket``). Both speak the same
messages, so both use this module: a request is ``(kind, id, key, *args)``, an answer
``(kind, id, payload)`` where ``kind`` is ``"ok"``, ``"error"`` or (with id ``None``)
``"ready"``. Each message is pickled (protocol 5: a numpy array's bytes go into the
frame in one copy, not through ``tobytes``) and framed as
``multiprocessing.Connection`` frames it, so the far end reads with a plain blocking
``Connection`` while this end reads with the event loop. These are our own messages
between our own processes, never a user's pickle.

Every call carries its own request id and answers are matched by it, so several calls
can be in flight at once (the far end answers them in turn) and a late answer (its
caller gave up) can never reach another caller.
"""

from __future__ import annotations

import asyncio
import itertools
import pickle
import struct
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from maas.errors import MaasError, RuntimeFailure, WorkerCrashed, error_class_for

__all__ = [
    "FrameReader",
    "FramedPeer",
    "answer_until_eof",
    "dumps",
    "error_payload",
    "rebuild_error",
    "send",
]

#: Requests larger than this are pickled in a thread rather than on the event loop.
_PICKLE_INLINE_MAX_BYTES = 1 << 20
#: Frames smaller than this are joined to their header: one write, one packet.
_JOIN_MAX_BYTES = 1 << 16
_ErrorPayload = tuple[str, str, dict[str, Any]]


def error_payload(exc: BaseException) -> _ErrorPayload:
    """An error as plain data for another process: its code, message and details. A
    framework's own exception never crosses: its text may name paths."""
    if isinstance(exc, MaasError):
        return exc.code, exc.message, exc.details
    return RuntimeFailure.code, f"the model failed: {type(exc).__name__}", {}


def rebuild_error(payload: _ErrorPayload) -> MaasError:
    """The ``MaasError`` an ``error_payload`` describes, raised again on this side."""
    code, message, details = payload
    try:
        return error_class_for(code)(message, details=details)
    except TypeError:  # a class with its own constructor (MissingExtra)
        return RuntimeFailure(message, details=details)


def _frame(payload: bytes) -> list[bytes]:
    """``payload`` framed as ``multiprocessing.Connection.recv_bytes`` reads it."""
    size = len(payload)
    if size > 0x7FFFFFFF:
        return [struct.pack("!iQ", -1, size), payload]
    return [struct.pack("!i", size), payload]


def send(writer: asyncio.WriteTransport, payload: bytes) -> None:
    """Frame and write ``payload`` (never blocks: the transport buffers what the
    socket does not take). A small one goes in one write, so in one packet; a large one
    in two, so that its bytes are not joined to the header's in a copy first."""
    header, body = _frame(payload)
    if len(body) < _JOIN_MAX_BYTES:
        writer.write(header + body)
    else:
        writer.write(header)
        writer.write(body)


def dumps(message: Any) -> bytes:
    return pickle.dumps(message, pickle.HIGHEST_PROTOCOL)


def answer_until_eof(
    requests: Connection, responses: Connection, answer: Callable[[tuple[Any, ...]], Any]
) -> None:
    """The far end's loop (blocking): read each request, ``answer`` it, send the result
    or the error, until the stream ends or a ``None`` says stop."""
    while True:
        try:
            message = requests.recv()
        except EOFError:  # the server went away
            return
        if message is None:
            return
        request_id = message[1]
        try:
            reply = ("ok", request_id, answer(message))
        except Exception as exc:  # every failure belongs to this request only
            reply = ("error", request_id, error_payload(exc))
        responses.send_bytes(dumps(reply))


class FrameReader(asyncio.Protocol):
    """The far end's answers, unframed and unpickled on the event loop as they arrive."""

    def __init__(self, on_message: Callable[[Any], None], on_eof: Callable[[], None]) -> None:
        self._on_message = on_message
        self._on_eof = on_eof
        self._buffer = bytearray()

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        while len(buffer) >= 4:
            (size,) = struct.unpack_from("!i", buffer)
            start = 4
            if size == -1:  # a frame of 2 GiB or more: its length follows as 8 bytes
                if len(buffer) < 12:
                    return
                (size,) = struct.unpack_from("!Q", buffer, 4)
                start = 12
            end = start + size
            if len(buffer) < end:
                return
            with memoryview(buffer) as view:
                message = pickle.loads(view[start:end])
            del buffer[:end]
            self._on_message(message)

    def connection_lost(self, exc: Exception | None) -> None:
        self._on_eof()


class FramedPeer:
    """This end of a stream to a process that answers calls: the calls in flight, each
    a future its answer settles, and what happens when the stream ends (every call in
    flight fails at once with ``_gone()``: nothing waits on a timeout).

    A subclass opens the stream, sets ``_writer``, reads with ``reader()`` and waits
    for ``_ready`` (the far end's ``"ready"``) before it sets ``alive``."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._writer: asyncio.WriteTransport | None = None
        self._ids = itertools.count()
        self._ready: asyncio.Future[None] = self._loop.create_future()
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._exited = False
        self.alive = False
        #: Calls sent and not yet answered or abandoned by their callers.
        self.in_flight = 0

    def _gone(self, loading: bool = False) -> Exception:
        """What a call gets when the far end is gone (``loading``: before it was ready)."""
        return WorkerCrashed(retry_after=1.0)

    def _ended(self) -> None:
        """Called once when the stream ends, after the calls in flight have failed."""

    def reader(self) -> FrameReader:
        return FrameReader(self._on_message, self._on_eof)

    def _on_message(self, message: tuple[str, int | None, Any]) -> None:
        kind, request_id, payload = message
        if request_id is None:
            if not self._ready.done():
                if kind == "ready":
                    self._ready.set_result(None)
                else:
                    self._ready.set_exception(rebuild_error(payload))
            return
        future = self._pending.pop(request_id, None)
        if future is None or future.done():  # its caller left; the answer is dropped
            return
        if kind == "ok":
            future.set_result(payload)
        else:
            future.set_exception(rebuild_error(payload))

    def _on_eof(self) -> None:
        if self._exited:
            return
        self._exited = True
        self.alive = False
        if not self._ready.done():
            self._ready.set_exception(self._gone(loading=True))
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(self._gone())
        if self._writer is not None and not self._writer.is_closing():
            self._writer.abort()  # the stream has no reader any more
        self._ended()

    async def call(
        self, key: str, inputs: dict[str, np.ndarray], outputs: list[str]
    ) -> dict[str, np.ndarray]:
        result: dict[str, np.ndarray] = await self._request("call", key, inputs, outputs)
        return result

    async def _request(self, kind: str, key: str, *args: Any) -> Any:
        writer = self._writer
        if writer is None or writer.is_closing() or not self.alive:
            raise self._gone()
        request_id = next(self._ids)
        future: asyncio.Future[Any] = self._loop.create_future()
        self._pending[request_id] = future
        self.in_flight += 1
        try:
            message = (kind, request_id, key, *args)
            if kind == "call" and _is_large(args[0]):  # pickling copies every byte: not on
                # the loop's time
                payload = await asyncio.to_thread(dumps, message)
            else:
                payload = dumps(message)
            if writer.is_closing():  # the far end went away while we pickled
                raise self._gone()
            send(writer, payload)
            return await future
        finally:
            self.in_flight -= 1
            self._pending.pop(request_id, None)


def _is_large(inputs: dict[str, np.ndarray]) -> bool:
    size = 0
    for array in inputs.values():
        if array.dtype == object:  # strings: their own lengths, not the pointers'
            size += sum(len(v) if isinstance(v, bytes | str) else 64 for v in array.flat)
        else:
            size += array.nbytes
    return size > _PICKLE_INLINE_MAX_BYTES
