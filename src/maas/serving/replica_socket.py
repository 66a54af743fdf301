"""The calls of a Ray replica, over a TCP socket of its own rather than Ray tasks.

A Ray actor call costs the gateway a task submission, a scheduling round trip and an
object transfer, and costs the replica Ray's task execution around the model: about
1.4 ms more latency and 225 µs more CPU per call than a local worker's pipe, which on
iris cost a third of the throughput. Ray still places, restarts and health-checks the
replicas; only the calls take this shorter road.

Each replica (``ReplicaListener``) listens on its node's address (the one Ray gives the
node), on an ephemeral port, and reports ``(host, port, token)`` in its answer to the
health ping; a gateway keeps one connection to each replica (``ReplicaChannel``) and
sends the calls on it with the messages and frames of the local worker processes
(``maas.serving.framed``), several in flight at once, matched to their answers by
request id. The replica answers each connection from a thread of its own, one call
at a time under the model's lock, so Ray's own threads (the health ping) still run.

The token is random per replica (a restarted one has a new token and port): a client
opens with it as its first frame, and a connection that does not is closed before any
pickle of it is read. It reaches the gateway through Ray, so it keeps out whoever can
reach the port but not the cluster's Ray, which already runs any code it is sent.

A connection that breaks (the replica's process died: its kernel closes the socket at
once) fails the calls in flight on it with ``ChannelLost``, which the gateway treats as
it treats a Ray actor lost: the call goes once to another replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import secrets
import socket
import struct
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from maas.serving.framed import FramedPeer, answer_until_eof, dumps, send

__all__ = ["ChannelLost", "ListenerAddress", "ReplicaChannel", "ReplicaListener"]

log = logging.getLogger("maas.serving")

#: ``(host, port, token)``: where a replica listens and what opens it.
ListenerAddress = tuple[str, int, bytes]
_TOKEN_BYTES = 32
#: Longest a client may take to present its token, and a gateway to connect.
_HANDSHAKE_S = 5.0


class ChannelLost(Exception):
    """The replica's connection broke: the call may not have run, and may go elsewhere."""


class ReplicaListener:
    """The replica's end: a listening socket and a thread per connection, each reading
    calls and sending ``answer``'s results in turn."""

    def __init__(self, host: str, answer: Callable[[tuple[Any, ...]], Any]) -> None:
        self._answer = answer
        self._token = secrets.token_bytes(_TOKEN_BYTES)
        self._socket = socket.create_server((host, 0))
        self.address: ListenerAddress = (host, self._socket.getsockname()[1], self._token)
        threading.Thread(target=self._accept, name="replica listener", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._socket.accept()
            except OSError:  # closed
                return
            threading.Thread(
                target=self._serve, args=(client,), name="replica connection", daemon=True
            ).start()

    def _serve(self, client: socket.socket) -> None:
        with contextlib.suppress(OSError, EOFError):
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client.settimeout(_HANDSHAKE_S)
            if not hmac.compare_digest(_read_token(client), self._token):
                client.close()
                return
            client.settimeout(None)
            connection = Connection(client.detach())
            try:
                connection.send_bytes(dumps(("ready", None, None)))
                answer_until_eof(connection, connection, self._answer)
            finally:
                connection.close()

    def close(self) -> None:
        """Stop listening (connections open stay until their clients leave)."""
        # A close alone leaves the socket listening while the thread waits in accept().
        with contextlib.suppress(OSError):
            self._socket.shutdown(socket.SHUT_RDWR)
        self._socket.close()


def _read_token(client: socket.socket) -> bytes:
    """The first frame, if it is a token's length; else nothing that could match."""
    header = _read_exactly(client, 4)
    (size,) = struct.unpack("!i", header)
    if size != _TOKEN_BYTES:
        return b""
    return _read_exactly(client, size)


def _read_exactly(client: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = client.recv(size - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


class ReplicaChannel(FramedPeer):
    """The gateway's connection to one replica; ``on_lost`` is called once when it
    breaks (or is closed), after its calls in flight have failed."""

    def __init__(self, address: ListenerAddress, on_lost: Callable[[ReplicaChannel], None]):
        super().__init__()
        self.address = address
        self._on_lost = on_lost

    @classmethod
    async def open(
        cls, address: ListenerAddress, on_lost: Callable[[ReplicaChannel], None]
    ) -> ReplicaChannel:
        """Connect and present the token; ``OSError`` or ``TimeoutError`` if the
        replica cannot be reached, ``ChannelLost`` if it closed the connection."""
        channel = cls(address, on_lost)
        host, port, token = address
        async with asyncio.timeout(_HANDSHAKE_S):
            transport, _ = await channel._loop.create_connection(channel.reader, host, port)
            channel._writer = transport
            try:
                send(transport, token)
                await channel._ready
            except BaseException:
                transport.abort()
                raise
        channel.alive = True
        return channel

    def _gone(self, loading: bool = False) -> Exception:
        return ChannelLost()

    def _ended(self) -> None:
        self._on_lost(self)

    def close(self) -> None:
        """Break the connection: the calls in flight on it fail with ``ChannelLost``."""
        if self._writer is not None:
            self._writer.abort()  # its connection_lost ends the calls
