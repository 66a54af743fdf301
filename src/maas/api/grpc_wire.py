"""gRPC's wire format over HTTP/2, as an ASGI app served by uvicorn's HTTP/2 protocol.

Why not ``grpc.aio``'s server: measured on iris (one row, one server core, h2load at 16
streams), ``grpc.aio`` spends about 60 % more CPU per call than uvicorn's HTTP/1.1 path
for the same work: its C core parses HTTP/2 on threads of its own and a poller thread
hands each event to the event loop through a socket, so every call crosses threads
several times and contends for the GIL. uvicorn's HTTP/2 protocol (``http2=True`` on
the ``zttp`` parser) runs on the loop itself, like our REST path, and carries gRPC as
well: a call is a POST of length-prefixed messages whose status comes back in the
trailers (``grpc-status``, ``grpc-message``). The same bytes reach the official
clients (``tritonclient.grpc``, any grpcio channel), over TLS too (ALPN ``h2``).

This module knows the wire, nothing of V2: ``GrpcWire`` maps ``/package.Service/Method``
to a ``Method`` (a handler and its request type) and gives each handler a
``CallContext``: the metadata, the deadline and the client's address, trailing
metadata and ``abort``. A handler's own exception is turned into a status by the
``described`` function the app is given, so handlers need no error handling of their own.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import quote

import grpc
import orjson

from maas.api.errors import error_body
from maas.errors import UnsupportedMediaType

__all__ = ["CallAborted", "CallContext", "GrpcWire", "Method", "parse_timeout", "serving_http2"]

#: ``grpc-timeout`` units, in seconds (the gRPC HTTP/2 protocol).
_TIMEOUT_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
_PREFIX = struct.Struct(">BI")  # compressed flag, message length
_HEADERS = [(b"content-type", b"application/grpc")]
#: What ``grpc-message`` carries as it is; every other byte is percent-encoded.
_PRINTABLE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")


class CallAborted(Exception):
    """Raised by ``CallContext.abort``: the call ends with this status and message."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


@dataclass(frozen=True)
class Method:
    """One RPC: ``handler(request, context)`` answers a message; a ``streaming`` one
    takes an async iterator of requests and yields its answers (bidirectional)."""

    handler: Callable[..., Any]
    request: Any  # a protobuf message class (its ``FromString``)
    streaming: bool = False


class CallContext:
    """What a handler may ask of its call: the metadata the client sent, the time left
    before its deadline, the client's address; and what it may do: set trailing
    metadata, abort."""

    __slots__ = ("_deadline", "_metadata", "client_host", "trailing")

    def __init__(
        self,
        metadata: tuple[tuple[str, str], ...],
        deadline: float | None,
        client_host: str | None,
    ) -> None:
        self._metadata = metadata
        self._deadline = deadline
        self.client_host = client_host
        self.trailing: tuple[tuple[str, str], ...] = ()

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def time_remaining(self) -> float | None:
        if self._deadline is None:
            return None
        return max(0.0, self._deadline - time.monotonic())

    def set_trailing_metadata(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self.trailing = tuple(metadata)

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise CallAborted(code, details)


def parse_timeout(value: str) -> float | None:
    """``grpc-timeout`` (``"250m"``: 250 ms) in seconds; None when malformed."""
    unit = _TIMEOUT_UNITS.get(value[-1:])
    digits = value[:-1]
    if unit is None or not digits.isdigit() or len(digits) > 8:
        return None
    return int(digits) * unit


@dataclass(frozen=True)
class _Head:
    """What a call's headers say, read in one pass: whether it is gRPC at all, its
    deadline, and the client's metadata (every header but HTTP/2's own and gRPC's
    reserved ones)."""

    is_grpc: bool
    timeout_s: float | None
    metadata: tuple[tuple[str, str], ...]


def _head(headers: list[tuple[bytes, bytes]]) -> _Head:
    is_grpc, timeout_s, metadata = False, None, []
    for name, value in headers:
        if name == b"content-type":
            is_grpc = bytes(value).startswith(b"application/grpc")
        elif name == b"grpc-timeout":
            timeout_s = parse_timeout(value.decode("latin-1"))
        elif not name.startswith((b":", b"grpc-")) and name != b"te":
            metadata.append((name.decode("latin-1"), value.decode("latin-1")))
    return _Head(is_grpc, timeout_s, tuple(metadata))


def _trailers(
    code: grpc.StatusCode, details: str, metadata: tuple[tuple[str, str], ...]
) -> list[tuple[bytes, bytes]]:
    trailers = [(b"grpc-status", str(code.value[0]).encode())]
    if details:
        trailers.append((b"grpc-message", quote(details, safe=_PRINTABLE).encode()))
    trailers += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in metadata]
    return trailers


def _frame(payload: bytes) -> bytes:
    """One length-prefixed, uncompressed gRPC message."""
    return _PREFIX.pack(0, len(payload)) + payload


class _Messages:
    """The request's length-prefixed messages as they arrive, within ``limit`` bytes
    each."""

    def __init__(self, receive: Callable[[], Awaitable[dict[str, Any]]], limit: int) -> None:
        self._receive = receive
        self._limit = limit
        self._buffer = bytearray()
        self._more = True

    async def next(self) -> bytes | None:
        """The next message, or None once the client has sent them all."""
        while True:
            message = self._take()
            if message is not None:
                return message
            if not self._more:
                if self._buffer:
                    raise CallAborted(grpc.StatusCode.INTERNAL, "a message ends early")
                return None
            event = await self._receive()
            if event["type"] == "http.disconnect":
                raise CallAborted(grpc.StatusCode.CANCELLED, "the client went away")
            self._buffer += event.get("body", b"")
            self._more = event.get("more_body", False)

    def _take(self) -> bytes | None:
        if len(self._buffer) < _PREFIX.size:
            return None
        compressed, length = _PREFIX.unpack_from(self._buffer)
        if compressed:
            raise CallAborted(grpc.StatusCode.UNIMPLEMENTED, "compressed messages are not accepted")
        if length > self._limit:
            raise CallAborted(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"a message of {length} bytes is over the limit of {self._limit}",
            )
        end = _PREFIX.size + length
        if len(self._buffer) < end:
            return None
        message = bytes(self._buffer[_PREFIX.size : end])
        del self._buffer[:end]
        return message


class _Reply:
    """The response side of one call: headers once, messages, then the trailers."""

    def __init__(self, send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        self._send = send
        self._started = False

    async def message(self, payload: bytes) -> None:
        await self._start()
        await self._send({"type": "http.response.body", "body": _frame(payload), "more_body": True})

    async def end(self, trailers: list[tuple[bytes, bytes]], last: bytes | None = None) -> None:
        """The trailers, after ``last`` (a unary call's answer: one write less)."""
        await self._start()
        body = b"" if last is None else _frame(last)
        await self._send({"type": "http.response.body", "body": body, "more_body": False})
        await self._send({"type": "http.response.trailers", "headers": trailers})

    async def _start(self) -> None:
        if not self._started:
            self._started = True
            start = {"type": "http.response.start", "status": 200, "headers": _HEADERS}
            await self._send({**start, "trailers": True})


class GrpcWire:
    """An ASGI app answering gRPC calls to ``methods`` (``"/package.Service/Method"``)."""

    def __init__(
        self,
        methods: dict[str, Method],
        *,
        max_message_bytes: int,
        described: Callable[[BaseException], tuple[grpc.StatusCode, str, Any]],
    ) -> None:
        self._methods = methods
        self._limit = max_message_bytes
        self._described = described

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        head = _head(scope["headers"])
        if scope.get("http_version") != "2" or scope["method"] != "POST" or not head.is_grpc:
            await _refused(send)
            return
        reply = _Reply(send)
        method = self._methods.get(scope["path"])
        if method is None:
            code, details = grpc.StatusCode.UNIMPLEMENTED, f"unknown method {scope['path']}"
            await reply.end(_trailers(code, details, ()))
            return
        deadline = None if head.timeout_s is None else time.monotonic() + head.timeout_s
        client = scope.get("client")
        context = CallContext(head.metadata, deadline, client[0] if client else None)
        messages = _Messages(receive, self._limit)
        answer = None
        try:
            if method.streaming:
                await self._stream(method, messages, context, reply)
            else:
                answer = await self._unary(method, messages, context)
        except CallAborted as exc:
            await reply.end(_trailers(exc.code, exc.details, context.trailing))
        except Exception as exc:  # a handler's own error: described like the others
            code, details, trailing = self._described(exc)
            await reply.end(_trailers(code, details, trailing))
        else:
            await reply.end(_trailers(grpc.StatusCode.OK, "", context.trailing), answer)

    async def _unary(self, method: Method, messages: _Messages, context: CallContext) -> bytes:
        payload = await messages.next()
        if payload is None or await messages.next() is not None:
            raise CallAborted(grpc.StatusCode.INVALID_ARGUMENT, "a call takes one message")
        request = _parsed(method, payload)
        response = await method.handler(request, context)
        answer: bytes = response.SerializeToString()
        return answer

    async def _stream(
        self, method: Method, messages: _Messages, context: CallContext, reply: _Reply
    ) -> None:
        async def requests() -> AsyncIterator[Any]:
            while (payload := await messages.next()) is not None:
                yield _parsed(method, payload)

        async for response in method.handler(requests(), context):
            await reply.message(response.SerializeToString())


def _parsed(method: Method, payload: bytes) -> Any:
    try:
        return method.request.FromString(payload)
    except Exception as exc:  # protobuf's DecodeError: not a message of this type
        raise CallAborted(
            grpc.StatusCode.INVALID_ARGUMENT, f"the message does not parse: {exc}"
        ) from exc


async def _refused(send: Any) -> None:
    """A 415 in maas's error shape: this port takes gRPC calls only."""
    message = "this port takes gRPC calls only (HTTP/2, content-type application/grpc)"
    code = UnsupportedMediaType.code
    body = orjson.dumps(error_body(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, code, message))
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 415, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _listening(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named, not 0: asyncio's own loop turns Nagle off (TCP_NODELAY) only on
    # sockets whose proto says TCP, and a response is several small writes (headers,
    # message, trailers): with Nagle on, each call waited ~40 ms for the client's ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


@asynccontextmanager
async def serving_http2(
    app: Any,
    host: str,
    port: int,
    *,
    grace_s: float,
    ssl_certfile: str | None = None,
    ssl_keyfile: str | None = None,
) -> AsyncIterator[int]:
    """Serve ``app`` over HTTP/2 (cleartext prior knowledge, or TLS with ALPN ``h2``) on
    ``host:port`` (0: any free) in this event loop while the block runs; yields the
    bound port. At exit the listener closes, idle connections get a GOAWAY, and calls
    in flight get ``grace_s`` to finish."""
    import uvicorn

    config = uvicorn.Config(
        app,
        http="zttp",
        http2=True,
        lifespan="off",
        log_config=None,  # the server's logging is set up already: leave it
        log_level=None,
        access_log=False,
        server_header=False,
        date_header=False,
        proxy_headers=False,
        # gRPC channels stay open between calls: an idle connection is kept a while.
        timeout_keep_alive=300,
        timeout_graceful_shutdown=max(1, int(grace_s)),
        ssl_certfile=ssl_certfile,
        ssl_keyfile=ssl_keyfile,
    )
    config.load()
    server = uvicorn.Server(config)
    server.lifespan = config.lifespan_class(config)
    sock = _listening(host, port)
    await server.startup(sockets=[sock])
    try:
        yield sock.getsockname()[1]
    finally:
        await server.shutdown(sockets=[sock])
