"""``limited_http_protocol`` as uvicorn runs it, fed the reads a socket would give it.

The reads are handed to ``data_received`` one by one, so a test says exactly where one
read ends and the next begins: over a real socket the kernel may join two sends into
one read, and no wait in a test can promise it does not.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from starlette.types import Receive, Scope, Send
from uvicorn.config import Config
from uvicorn.server import ServerState

from maas.api.protocol import limited_http_protocol

pytestmark = pytest.mark.anyio

HEAD_CAP = 64 * 1024


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class _Transport(asyncio.Transport):
    """What the protocol writes, and an event set when the answer's body is complete."""

    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.closed = False
        self.answered = asyncio.Event()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 5000)}.get(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += bytes(data)
        head, _, body = self.written.partition(b"\r\n\r\n")
        length = next(
            (int(line.split(b":")[1]) for line in head.split(b"\r\n")
             if line.lower().startswith(b"content-length:")),
            None,
        )  # fmt: skip
        if length is not None and len(body) >= length:
            self.answered.set()

    def close(self) -> None:
        self.closed = True
        self.answered.set()

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def _body_length(scope: Scope, receive: Receive, send: Send) -> None:
    """Reads the whole body and answers its length."""
    received = 0
    more = True
    while more:
        message = await receive()
        received += len(message.get("body", b""))
        more = message.get("more_body", False)
    answer = str(received).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(answer)).encode())]})  # fmt: skip
    await send({"type": "http.response.body", "body": answer})


async def _serve(reads: list[bytes]) -> bytes:
    """The bytes the protocol writes back after receiving ``reads``, one read each."""
    protocol_class = limited_http_protocol(HEAD_CAP)
    config = Config(app=_body_length, http=protocol_class, log_config=None, lifespan="off")
    config.load()
    transport = _Transport()
    protocol = protocol_class(
        config=config, server_state=ServerState(), app_state={}, _loop=asyncio.get_running_loop()
    )
    protocol.connection_made(transport)
    for read in reads:
        protocol.data_received(read)
    await asyncio.wait_for(transport.answered.wait(), timeout=30)
    protocol.connection_lost(None)
    return transport.written


async def test_a_head_whose_blank_line_straddles_two_reads_is_not_counted_with_its_body() -> None:
    """The head cap counts the head only: a big body after a head whose final CRLF came
    in the next read used to be counted as head, and a large push got 431."""
    body = b" " * 100_000  # past the head cap, as head it would be refused
    head = f"POST /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
    # The head's closing CRLF arrives in a read of its own, with the body.
    answer = await _serve([head.encode(), b"\r\n" + body])
    assert answer.split(b" ")[1] == b"200", answer
    assert answer.endswith(b"\r\n\r\n" + str(len(body)).encode()), answer
