"""``JsonDepthCap`` as ASGI: what it reads of a body before the route sees it.

The body arrives as ASGI ``http.request`` messages, one chunk each; the tests count
how many the middleware took before the application behind it was called.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from starlette.types import Message, Receive, Scope, Send

from maas.api.hardening import JsonDepthCap

pytestmark = pytest.mark.anyio

CHUNK = b" " * 1024
LIMIT = 64 * 1024
HUGE = 16 * LIMIT // len(CHUNK)  # chunks of a body far past the limit


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Client:
    """Sends ``chunks`` chunks of JSON-typed body and keeps the answer; ``taken`` is how
    many chunks were read when the application was reached."""

    def __init__(self, chunks: int) -> None:
        self.chunks = chunks
        self.sent = 0
        self.taken: int | None = None
        self.messages: list[Message] = []

    async def receive(self) -> Message:
        self.sent += 1
        more = self.sent < self.chunks
        return {"type": "http.request", "body": CHUNK, "more_body": more}

    async def send(self, message: Message) -> None:
        self.messages.append(message)

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.taken = self.sent
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    @property
    def status(self) -> int:
        status: int = self.messages[0]["status"]
        return status

    def answer(self) -> Any:
        return json.loads(b"".join(m.get("body", b"") for m in self.messages[1:]))


def _scope(path: str) -> Scope:
    return {
        "type": "http",
        "method": "POST",
        "path": path,
        "headers": [(b"content-type", b"application/json")],
        "state": {"request_id": "test"},
    }


@pytest.mark.parametrize("path", ["/api/v1/models/big/versions", "/api/v1/datasets"])
async def test_an_upload_path_streams_through_unread(path: str) -> None:
    """An artifact upload typed as JSON is not a JSON body: the route gets the stream
    as it comes, however large, instead of the middleware holding all of it."""
    client = Client(chunks=HUGE)
    await JsonDepthCap(client.app, max_depth=32, max_body_bytes=LIMIT)(
        _scope(path), client.receive, client.send
    )
    assert (client.taken, client.status) == (0, 204)


async def test_a_json_body_is_read_no_further_than_the_limit() -> None:
    client = Client(chunks=HUGE)
    await JsonDepthCap(client.app, max_depth=32, max_body_bytes=LIMIT)(
        _scope("/api/v1/keys"), client.receive, client.send
    )
    assert client.taken is None and client.status == 413
    assert client.answer()["code"] == "payload_too_large"
    assert client.sent == LIMIT // len(CHUNK) + 1


async def test_a_json_body_within_the_limit_reaches_the_route_whole() -> None:
    client = Client(chunks=4)
    await JsonDepthCap(client.app, max_depth=32, max_body_bytes=LIMIT)(
        _scope("/api/v1/keys"), client.receive, client.send
    )
    assert (client.taken, client.status) == (4, 204)
