"""KServe V2 over gRPC with the official ``tritonclient.grpc``, over a real loopback
socket to the gRPC service of services opened in this process."""

from __future__ import annotations

import asyncio
import contextlib
import queue
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
from prometheus_client import REGISTRY
from sklearn.linear_model import LogisticRegression

from tests.inprocess.app import TEST_ADMIN_KEY, InProcess

grpcclient = pytest.importorskip(
    "tritonclient.grpc", reason="tritonclient.grpc needs grpcio (pip install 'maas[grpc]')"
)
from tritonclient.utils import InferenceServerException  # noqa: E402

from maas.api.v2grpc import serving_grpc  # noqa: E402

pytestmark = pytest.mark.anyio

_AUTH = {"authorization": f"Bearer {TEST_ADMIN_KEY}"}


@pytest.fixture(scope="module")
async def grpc_url(demo: InProcess) -> AsyncIterator[str]:
    async with serving_grpc(demo.services, "127.0.0.1", 0) as port:
        yield f"127.0.0.1:{port}"


def _client(url: str) -> Any:
    return grpcclient.InferenceServerClient(url)


async def _call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """The client is synchronous and the server runs on this loop: call it off the loop."""
    return await asyncio.to_thread(fn, *args, **kwargs)


def _input(name: str, array: np.ndarray, datatype: str) -> Any:
    tensor = grpcclient.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)  # raw_input_contents
    return tensor


async def test_classes_equal_scikit_learns(
    grpc_url: str, iris: tuple[np.ndarray, np.ndarray], iris_model: LogisticRegression
) -> None:
    features = iris[0]
    client = _client(grpc_url)
    result = await _call(
        client.infer, "iris", [_input("input", features, "FP64")], headers=_AUTH, request_id="r1"
    )
    np.testing.assert_array_equal(result.as_numpy("predict"), iris_model.predict(features))
    response = result.get_response()
    assert (response.model_version, response.id) == ("1", "r1")

    onnx = await _call(
        client.infer,
        "iris-onnx",
        [_input("float_input", features.astype(np.float32), "FP32")],
        model_version="production",
        outputs=[grpcclient.InferRequestedOutput("label")],
        headers=_AUTH,
    )
    np.testing.assert_array_equal(onnx.as_numpy("label"), iris_model.predict(features))
    assert [o.name for o in onnx.get_response().outputs] == ["label"]


async def test_health_and_metadata(grpc_url: str) -> None:
    client = _client(grpc_url)
    assert await _call(client.is_server_live)  # health needs no key, as on REST
    assert await _call(client.is_server_ready)
    assert (await _call(client.get_server_metadata)).name == "maas"
    assert await _call(client.is_model_ready, "iris", "production", headers=_AUTH)
    meta = await _call(client.get_model_metadata, "iris", headers=_AUTH, as_json=True)
    assert meta["platform"] == "sklearn"
    assert meta["inputs"] == [{"name": "input", "datatype": "FP64", "shape": ["-1", "4"]}]
    onnx = await _call(client.get_model_metadata, "iris-onnx", "1", headers=_AUTH, as_json=True)
    assert (onnx["platform"], onnx["versions"]) == ("onnxruntime_onnx", ["1"])


async def _refused(fn: Any, *args: Any, **kwargs: Any) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as caught:
        await _call(fn, *args, **kwargs)
    return caught.value


@pytest.mark.parametrize(
    ("headers", "why"),
    [({}, "an API key is required"), ({"authorization": "Bearer maas_nope"}, "not valid")],
)
async def test_a_call_without_a_valid_key_is_unauthenticated(
    grpc_url: str, headers: dict[str, str], why: str
) -> None:
    features = np.zeros((1, 4))
    error = await _refused(
        _client(grpc_url).infer, "iris", [_input("input", features, "FP64")], headers=headers
    )
    assert error.status() == "StatusCode.UNAUTHENTICATED"
    assert error.message().startswith("[unauthenticated]") and why in error.message()


async def test_errors_are_status_codes_carrying_the_stable_code(grpc_url: str) -> None:
    client = _client(grpc_url)
    missing = await _refused(
        client.infer, "no-such", [_input("input", np.zeros((1, 4)), "FP64")], headers=_AUTH
    )
    assert missing.status() == "StatusCode.NOT_FOUND"
    assert missing.message() == "[model_not_found] model 'no-such' not found"

    shape = await _refused(
        client.infer, "iris", [_input("input", np.zeros((2, 3)), "FP64")], headers=_AUTH
    )
    assert shape.status() == "StatusCode.INVALID_ARGUMENT"
    assert shape.message().startswith("[shape_mismatch] input 'input'")

    named = await _refused(
        client.infer, "iris", [_input("wrong", np.zeros((1, 4)), "FP64")], headers=_AUTH
    )
    assert named.status() == "StatusCode.INVALID_ARGUMENT"
    assert named.message().startswith("[invalid_input]")

    version = await _refused(client.get_model_metadata, "iris", "7", headers=_AUTH)
    assert version.status() == "StatusCode.NOT_FOUND"
    assert version.message().startswith("[version_not_found]")


def _grpc_requests(code: str) -> float:
    labels = {"model": "iris", "version": "1", "protocol": "grpc", "code": code}
    return REGISTRY.get_sample_value("maas_requests_total", labels) or 0.0


async def test_calls_are_metered_and_counted(grpc_url: str, demo: InProcess) -> None:
    ok, bad = _grpc_requests("200"), _grpc_requests("400")
    client = _client(grpc_url)
    await _call(client.infer, "iris", [_input("input", np.ones((3, 4)), "FP64")], headers=_AUTH)
    await _refused(client.infer, "iris", [_input("input", np.ones((1, 2)), "FP64")], headers=_AUTH)
    assert (_grpc_requests("200"), _grpc_requests("400")) == (ok + 1, bad + 1)
    usage = demo.services.usage
    await usage.flush()
    rows = await asyncio.to_thread(usage.summarize, ("model",))
    iris_rows = [row for row in rows if row["model"] == "iris"]
    assert iris_rows and iris_rows[0]["rows"] >= 3


async def test_stream_infer_answers_each_request_in_order(
    grpc_url: str, iris: tuple[np.ndarray, np.ndarray], iris_model: LogisticRegression
) -> None:
    features = iris[0][:10]
    answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client = _client(grpc_url)

    def run() -> list[tuple[Any, Any]]:
        client.start_stream(callback=lambda result, error: answers.put((result, error)),
                            headers=_AUTH)  # fmt: skip
        try:
            client.async_stream_infer("iris", [_input("input", features, "FP64")])
            client.async_stream_infer("no-such", [_input("input", features, "FP64")])
            return [answers.get(timeout=60) for _ in range(2)]
        finally:
            client.stop_stream()

    (first, first_error), (second, second_error) = await asyncio.to_thread(run)
    assert first_error is None
    np.testing.assert_array_equal(first.as_numpy("predict"), iris_model.predict(features))
    assert second is None and "[model_not_found]" in str(second_error)


async def test_a_stream_without_a_key_ends_unauthenticated(grpc_url: str) -> None:
    answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client = _client(grpc_url)

    def run() -> tuple[Any, Any]:
        client.start_stream(callback=lambda result, error: answers.put((result, error)))
        try:
            # The server refuses the stream when it opens, before any message: where its
            # answer is in first, tritonclient refuses the send too, and the status comes
            # through the callback either way.
            with contextlib.suppress(InferenceServerException):
                client.async_stream_infer("iris", [_input("input", np.zeros((1, 4)), "FP64")])
            return answers.get(timeout=60)
        finally:
            client.stop_stream()

    result, error = await asyncio.to_thread(run)
    assert result is None
    assert error.status() == "StatusCode.UNAUTHENTICATED"
    assert error.message().startswith("[unauthenticated] an API key is required")
