"""Bad input found by trying maas as a new user and as an attacker: each gets a clear
4xx with a stable code from the real server, never a 500 or a silent acceptance."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.integration.server import RunningServer, start_server

ROW = {
    "inputs": [{"name": "input", "datatype": "FP64", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}]
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(tmp_path_factory.mktemp("bad-input-home"), "--demo")
    yield running
    running.stop()


# -- item 1: shapes numpy cannot build ----------------------------------------------------

_UNBUILDABLE = [
    pytest.param([4294967296, 4294967296, 0], id="2**32 x 2**32 x 0"),
    pytest.param([2147483648, 2147483648, 0], id="2**31 x 2**31 x 0"),
    pytest.param([1] * 65, id="65 dimensions"),
    pytest.param([0] * 100, id="100 dimensions"),
]


@pytest.mark.parametrize("shape", _UNBUILDABLE)
def test_a_json_tensor_of_a_shape_numpy_cannot_build_is_a_400(
    server: RunningServer, shape: list[int]
) -> None:
    body = {"inputs": [{"name": "input", "datatype": "FP64", "shape": shape, "data": []}]}
    with server.client() as http:
        response = http.post("/v2/models/iris/infer", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "invalid_input"
    assert "shape" in response.json()["error"]


@pytest.mark.parametrize("shape", _UNBUILDABLE)
def test_a_binary_tensor_of_a_shape_numpy_cannot_build_is_a_400(
    server: RunningServer, shape: list[int]
) -> None:
    entry = {
        "name": "input",
        "datatype": "FP64",
        "shape": shape,
        "parameters": {"binary_data_size": 0},
    }
    header = json.dumps({"inputs": [entry]}).encode()
    with server.client() as http:
        response = http.post(
            "/v2/models/iris/infer",
            content=header,
            headers={
                "Inference-Header-Content-Length": str(len(header)),
                "Content-Type": "application/octet-stream",
            },
        )
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "invalid_input"


def test_an_empty_tensor_of_a_reasonable_shape_still_reaches_the_model(
    server: RunningServer,
) -> None:
    body = {"inputs": [{"name": "input", "datatype": "FP64", "shape": [0, 4], "data": []}]}
    with server.client() as http:
        response = http.post("/v2/models/iris/infer", json=body)
    # Whatever the model says of no rows, the codec let the shape through to it.
    assert response.status_code != 500, response.text
    assert "dimensions" not in response.text and "too large" not in response.text
