"""gRPC's wire over uvicorn's HTTP/2 (``maas.api.grpc_wire``), driven by grpcio's own
client over a real loopback socket: framing, status trailers, limits, deadlines,
streaming and TLS, with small handlers of the test's own."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from tests.integration.tls import self_signed

from maas.api.grpc_wire import (
    CallAborted,
    CallContext,
    GrpcWire,
    Method,
    _listening,
    parse_timeout,
    serving_http2,
)
from maas.protocols.v2grpc import SERVICE, message

pytestmark = pytest.mark.anyio

Request, Response = message("ModelInferRequest"), message("ModelInferResponse")
_LIMIT = 256 * 1024


async def _echo(request: Any, context: CallContext) -> Any:
    """Answers the request's id and the size of its first raw input; 'fail' raises,
    'deadline' answers the time left, 'trailing' sets trailing metadata."""
    if request.id == "fail":
        raise ValueError("a handler's own error")
    if request.id == "abort":
        await context.abort(grpc.StatusCode.NOT_FOUND, "no modèle here")
    if request.id == "deadline":
        remaining = context.time_remaining()
        return Response(id=f"{remaining:.1f}" if remaining is not None else "none")
    if request.id == "trailing":
        context.set_trailing_metadata((("maas-code", "ok"),))
    size = len(request.raw_input_contents[0]) if request.raw_input_contents else 0
    keys = [k for k, _ in context.invocation_metadata()]
    return Response(id=request.id, model_name=str(size), model_version=",".join(keys))


async def _stream(requests: AsyncIterator[Any], context: CallContext) -> AsyncIterator[Any]:
    async for request in requests:
        yield Response(id=request.id)


def _described(exc: BaseException) -> tuple[grpc.StatusCode, str, Any]:
    return grpc.StatusCode.INTERNAL, f"[internal_error] {exc}", (("maas-code", "internal"),)


def _app() -> GrpcWire:
    methods = {
        f"/{SERVICE}/ModelInfer": Method(_echo, Request),
        f"/{SERVICE}/ModelStreamInfer": Method(_stream, Request, streaming=True),
    }
    return GrpcWire(methods, max_message_bytes=_LIMIT, described=_described)


@pytest.fixture
async def port() -> AsyncIterator[int]:
    async with serving_http2(_app(), "127.0.0.1", 0, grace_s=1) as bound:
        yield bound


def _unary(channel: grpc.Channel, method: str = "ModelInfer") -> Any:
    return channel.unary_unary(
        f"/{SERVICE}/{method}",
        request_serializer=Request.SerializeToString,
        response_deserializer=Response.FromString,
    )


async def _call(port: int, request: Any, **kwargs: Any) -> tuple[Any, Any]:
    """The answer and the call (its trailing metadata), from a grpcio channel in a thread."""

    def call() -> tuple[Any, Any]:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            return _unary(channel).with_call(request, **kwargs)  # type: ignore[no-any-return]

    return await asyncio.to_thread(call)


async def _refused(port: int, request: Any, **kwargs: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        await _call(port, request, **kwargs)
    return caught.value


async def test_a_call_answers_with_its_metadata_and_trailers(port: int) -> None:
    request = Request(id="trailing", raw_input_contents=[b"x" * 10])
    answer, call = await _call(port, request, metadata=(("authorization", "Bearer k"),))
    assert (answer.id, answer.model_name) == ("trailing", "10")
    assert "authorization" in answer.model_version.split(",")
    assert not any(k.startswith(("grpc-", ":")) for k in answer.model_version.split(","))
    assert ("maas-code", "ok") in call.trailing_metadata()


async def test_a_message_bigger_than_http2_windows_arrives_whole(port: int) -> None:
    payload = bytes(range(256)) * 800  # 200 KiB: several 64 KiB flow-control windows
    answer, _ = await _call(port, Request(id="big", raw_input_contents=[payload]))
    assert answer.model_name == str(len(payload))


async def test_a_message_over_the_limit_is_resource_exhausted(port: int) -> None:
    error = await _refused(port, Request(raw_input_contents=[b"x" * (_LIMIT + 1)]))
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "over the limit" in error.details()


async def test_errors_are_statuses_with_their_details_and_trailers(port: int) -> None:
    failed = await _refused(port, Request(id="fail"))
    assert failed.code() is grpc.StatusCode.INTERNAL
    assert failed.details() == "[internal_error] a handler's own error"
    assert ("maas-code", "internal") in failed.trailing_metadata()

    aborted = await _refused(port, Request(id="abort"))
    assert aborted.code() is grpc.StatusCode.NOT_FOUND
    assert aborted.details() == "no modèle here"  # percent-encoded on the wire


async def test_an_unknown_method_is_unimplemented(port: int) -> None:
    def call() -> None:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            _unary(channel, "NoSuchMethod")(Request())

    with pytest.raises(grpc.RpcError) as caught:
        await asyncio.to_thread(call)
    assert caught.value.code() is grpc.StatusCode.UNIMPLEMENTED


async def test_a_compressed_message_is_refused_clearly(port: int) -> None:
    def call() -> None:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            _unary(channel)(Request(id="z" * 100), compression=grpc.Compression.Gzip)

    with pytest.raises(grpc.RpcError) as caught:
        await asyncio.to_thread(call)
    assert caught.value.code() is grpc.StatusCode.UNIMPLEMENTED


async def test_the_deadline_the_client_sets_reaches_the_handler(port: int) -> None:
    timed, _ = await _call(port, Request(id="deadline"), timeout=30)
    assert 25.0 < float(timed.id) <= 30.0
    untimed, _ = await _call(port, Request(id="deadline"))
    assert untimed.id == "none"


async def test_a_stream_answers_each_message_as_it_comes(port: int) -> None:
    def call() -> list[str]:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stream = channel.stream_stream(
                f"/{SERVICE}/ModelStreamInfer",
                request_serializer=Request.SerializeToString,
                response_deserializer=Response.FromString,
            )
            return [r.id for r in stream(iter([Request(id=str(i)) for i in range(5)]))]

    assert await asyncio.to_thread(call) == ["0", "1", "2", "3", "4"]


async def test_http1_on_the_grpc_port_gets_a_415_with_our_code(port: int) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.post(f"http://127.0.0.1:{port}/{SERVICE}/ModelInfer")
    assert response.status_code == 415
    assert response.json()["code"] == "unsupported_media_type"
    assert "gRPC" in response.json()["error"]


async def test_tls_with_alpn_h2(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    served = serving_http2(
        _app(), "127.0.0.1", 0, grace_s=1, ssl_certfile=str(cert), ssl_keyfile=str(key)
    )
    async with served as port:

        def call() -> Any:
            credentials = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
            with grpc.secure_channel(f"127.0.0.1:{port}", credentials) as channel:
                return _unary(channel)(Request(id="tls"))

        assert (await asyncio.to_thread(call)).id == "tls"


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("250m", 0.25), ("2S", 2.0), ("1H", 3600.0), ("5u", 5e-6), ("10", None), ("xS", None)],
)
def test_grpc_timeout_header(value: str, seconds: float | None) -> None:
    assert parse_timeout(value) == (None if seconds is None else pytest.approx(seconds))


def test_call_aborted_carries_its_status() -> None:
    aborted = CallAborted(grpc.StatusCode.UNAVAILABLE, "later")
    assert (aborted.code, aborted.details, str(aborted)) == (
        grpc.StatusCode.UNAVAILABLE,
        "later",
        "later",
    )


async def test_connections_to_the_listener_have_nagle_off_on_asyncios_loop() -> None:
    """asyncio turns Nagle off only on sockets whose proto says TCP; with it on, each
    call's small writes (headers, message, trailers) waited ~40 ms for an ACK."""
    accepted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    class Probe(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            sock = transport.get_extra_info("socket")
            accepted.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

    listener = _listening("127.0.0.1", 0)
    server = await asyncio.get_running_loop().create_server(Probe, sock=listener)
    async with server:
        _, writer = await asyncio.open_connection(*listener.getsockname()[:2])
        assert await asyncio.wait_for(accepted, 10) == 1
        writer.close()
