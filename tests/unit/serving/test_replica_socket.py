"""A replica's socket: a real listener (in this process, or in a process of its own to
kill) and the gateway's real connection to it over loopback."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import threading
from asyncio.subprocess import PIPE
from typing import Any

import numpy as np
import pytest

from maas.config import ClusterSettings
from maas.errors import InvalidInput, RuntimeFailure
from maas.registry.archives import ExtractLimits
from maas.runtimes.base import LoadOptions
from maas.serving.ray_instances import RayCluster, RayInstances, ReplicaTarget, _Handle
from maas.serving.replica_socket import ChannelLost, ReplicaChannel, ReplicaListener

pytestmark = pytest.mark.anyio

_LIMITS = ExtractLimits(max_bytes=1 << 20, max_members=10)


def _doubled(message: tuple[Any, ...]) -> dict[str, np.ndarray]:
    _, _, _, inputs, _ = message
    return {"y": inputs["x"] * 2}


async def test_calls_in_flight_together_each_get_their_own_answer() -> None:
    listener = ReplicaListener("127.0.0.1", _doubled)
    lost: list[ReplicaChannel] = []
    channel = await ReplicaChannel.open(listener.address, lost.append)
    try:
        rows = [np.full((3, 4), float(i)) for i in range(10)]
        rows.append(np.arange(300_000, dtype=np.float64))  # 2.4 MB: pickled off the loop
        answers = await asyncio.gather(*(channel.call("m", {"x": x}, ["y"]) for x in rows))
        for x, answer in zip(rows, answers, strict=True):
            np.testing.assert_array_equal(answer["y"], x * 2)
        assert answers[-1]["y"].flags.writeable  # a runtime may write into what it gets
        assert not lost and channel.alive
    finally:
        channel.close()
        listener.close()


async def test_a_model_error_reaches_the_caller_as_its_maas_error() -> None:
    def failing(message: tuple[Any, ...]) -> Any:
        if message[3]["x"].size == 1:
            raise InvalidInput("x must have 4 columns", details={"input": "x"})
        raise KeyError("/srv/secret/path")  # a framework's own error: its text stays here

    listener = ReplicaListener("127.0.0.1", failing)
    lost: list[ReplicaChannel] = []
    channel = await ReplicaChannel.open(listener.address, lost.append)
    try:
        with pytest.raises(InvalidInput) as invalid:
            await channel.call("m", {"x": np.zeros(1)}, ["y"])
        assert invalid.value.details == {"input": "x"}
        with pytest.raises(RuntimeFailure) as failed:
            await channel.call("m", {"x": np.zeros(2)}, ["y"])
        assert "secret" not in failed.value.message
        # The connection stays for the next call.
        with pytest.raises(InvalidInput):
            await channel.call("m", {"x": np.zeros(1)}, ["y"])
        assert not lost
    finally:
        channel.close()
        listener.close()


async def test_a_client_without_the_token_is_closed_before_any_call() -> None:
    answered: list[Any] = []
    listener = ReplicaListener("127.0.0.1", answered.append)
    host, port, token = listener.address
    wrong = bytes(b ^ 1 for b in token)
    lost: list[ReplicaChannel] = []
    try:
        with pytest.raises(ChannelLost):
            await ReplicaChannel.open((host, port, wrong), lost.append)
        with pytest.raises(ChannelLost):  # a frame that is not even a token's length
            await ReplicaChannel.open((host, port, b"short"), lost.append)
        # The listener still serves whoever holds the token.
        channel = await ReplicaChannel.open(listener.address, lost.append)
        await channel.call("m", {"x": np.zeros(1)}, ["y"])
        channel.close()
    finally:
        listener.close()
    assert len(answered) == 1


async def test_nothing_listening_is_an_os_error() -> None:
    """A listener closed while its thread waits for the next client stops listening."""
    listener = ReplicaListener("127.0.0.1", _doubled)
    channel = await ReplicaChannel.open(listener.address, lambda _: None)
    await channel.call("m", {"x": np.zeros(1)}, ["y"])  # its thread is back in accept()
    await asyncio.sleep(0.1)
    listener.close()
    with pytest.raises(OSError):
        await ReplicaChannel.open(listener.address, lambda _: None)
    channel.close()


_SLOW_REPLICA = """
import sys, time
from maas.serving.replica_socket import ReplicaListener

listener = ReplicaListener("127.0.0.1", lambda message: time.sleep(60))
print(listener.address[1], listener.address[2].hex(), flush=True)
sys.stdin.read()
"""


async def test_a_replica_killed_mid_call_fails_its_calls_at_once() -> None:
    """kill -9 of the replica's process: its kernel closes the socket, and the calls in
    flight fail with ``ChannelLost`` (the gateway sends them elsewhere) without waiting
    for the minute the model would have taken."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _SLOW_REPLICA, stdin=PIPE, stdout=PIPE
    )
    try:
        assert process.stdout is not None
        port, token = (await process.stdout.readline()).split()
        broke = threading.Event()
        channel = await ReplicaChannel.open(
            ("127.0.0.1", int(port), bytes.fromhex(token.decode())), lambda _: broke.set()
        )
        calls = [
            asyncio.create_task(channel.call("m", {"x": np.zeros(1)}, ["y"])) for _ in range(3)
        ]
        await asyncio.sleep(0.2)
        assert not any(call.done() for call in calls)
        os.kill(process.pid, signal.SIGKILL)
        async with asyncio.timeout(10):
            results = await asyncio.gather(*calls, return_exceptions=True)
        assert all(isinstance(r, ChannelLost) for r in results), results
        assert broke.is_set() and not channel.alive
        with pytest.raises(ChannelLost):  # and a new call on it fails before it is sent
            await channel.call("m", {"x": np.zeros(1)}, ["y"])
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


async def test_a_socket_found_unreachable_is_tried_again_later_not_never(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A connect refused (a replica restarted between its ping and the connect, a loaded
    node) sends the replica's calls through Ray only until a later health round tries
    its socket again; the rounds in between do not each pay for a try."""
    listener = ReplicaListener("127.0.0.1", _doubled)
    with socket.create_server(("127.0.0.1", 0)) as reserved:
        port = reserved.getsockname()[1]  # it refuses until something listens on it again
    address = ("127.0.0.1", port, listener.address[2])
    target = ReplicaTarget("sklearn", "file:///none", "sha256:0", LoadOptions(), _LIMITS)
    instances = RayInstances(RayCluster(ClusterSettings()), target, 1)
    replica = _Handle("replica", None, 0, ("m", "1"))
    opened: list[socket.socket] = []
    try:
        await instances._connect(replica, address)
        assert replica.channel is None
        await instances._connect(replica, address)  # the next round: too soon to try again
        tries = [r for r in caplog.records if "cannot reach the socket" in r.getMessage()]
        assert len(tries) == 1 and replica.reconnect_wait_s == 2.0

        again = socket.create_server(("127.0.0.1", port))  # the replica listens now
        opened.append(again)
        threading.Thread(target=lambda: listener._serve(again.accept()[0]), daemon=True).start()
        replica.reconnect_at = 0.0  # a round after the wait
        await instances._connect(replica, address)
        assert replica.channel is not None and replica.reconnect_wait_s == 1.0
        answer = await replica.channel.call("m", {"x": np.ones(2)}, ["y"])
        np.testing.assert_array_equal(answer["y"], np.full(2, 2.0))
    finally:
        if replica.channel is not None:
            replica.channel.close()
        listener.close()
        for sock in opened:
            sock.close()
