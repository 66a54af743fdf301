"""Bad input found by trying maas as a new user and as an attacker: each gets a clear
4xx with a stable code from the app (in process), never a 500 or a silent acceptance."""

from __future__ import annotations

import json

import pytest

from tests.inprocess.app import InProcessServer

ROW = {
    "inputs": [{"name": "input", "datatype": "FP64", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}]
}


@pytest.fixture(scope="module")
def server(demo_server: InProcessServer) -> InProcessServer:
    return demo_server


# -- item 1: shapes numpy cannot build ----------------------------------------------------

_UNBUILDABLE = [
    pytest.param([4294967296, 4294967296, 0], id="2**32 x 2**32 x 0"),
    pytest.param([2147483648, 2147483648, 0], id="2**31 x 2**31 x 0"),
    pytest.param([1] * 65, id="65 dimensions"),
    pytest.param([0] * 100, id="100 dimensions"),
]


@pytest.mark.parametrize("shape", _UNBUILDABLE)
def test_a_json_tensor_of_a_shape_numpy_cannot_build_is_a_400(
    server: InProcessServer, shape: list[int]
) -> None:
    body = {"inputs": [{"name": "input", "datatype": "FP64", "shape": shape, "data": []}]}
    with server.client() as http:
        response = http.post("/v2/models/iris/infer", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "invalid_input"
    assert "shape" in response.json()["error"]


@pytest.mark.parametrize("shape", _UNBUILDABLE)
def test_a_binary_tensor_of_a_shape_numpy_cannot_build_is_a_400(
    server: InProcessServer, shape: list[int]
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
    server: InProcessServer,
) -> None:
    body = {"inputs": [{"name": "input", "datatype": "FP64", "shape": [0, 4], "data": []}]}
    with server.client() as http:
        response = http.post("/v2/models/iris/infer", json=body)
    # Whatever the model says of no rows, the codec let the shape through to it.
    assert response.status_code != 500, response.text
    assert "dimensions" not in response.text and "too large" not in response.text


# -- item 5: V2 inference takes JSON or the binary extension, nothing else ---------------


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/xml", "multipart/form-data; boundary=x", "text/html"],
)
def test_v2_inference_refuses_other_content_types_with_415(
    server: InProcessServer, content_type: str
) -> None:
    with server.client() as http:
        response = http.post(
            "/v2/models/iris/infer",
            content=json.dumps(ROW).encode(),
            headers={"Content-Type": content_type},
        )
    assert response.status_code == 415, response.text
    assert response.json()["code"] == "unsupported_media_type"
    assert "application/json" in response.json()["error"]


@pytest.mark.parametrize(
    "content_type", [None, "application/json", "application/json; charset=utf-8"]
)
def test_v2_inference_takes_json_with_or_without_a_content_type(
    server: InProcessServer, content_type: str | None
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    with server.client() as http:
        response = http.post(
            "/v2/models/iris/infer", content=json.dumps(ROW).encode(), headers=headers
        )
    assert response.status_code == 200, response.text


# -- item 6: key fields ------------------------------------------------------------------


@pytest.mark.parametrize(
    "field",
    [
        pytest.param({"limits": {"request_budget": True}}, id="budget true"),
        pytest.param({"limits": {"requests_per_minute": True}}, id="rpm true"),
        pytest.param({"limits": {"token_budget": "5"}}, id="budget string"),
        pytest.param({"owner": "team\nadmin"}, id="owner newline"),
        pytest.param({"owner": "team\x1b[31m"}, id="owner escape"),
        pytest.param({"models": ["iris\r\n*"]}, id="pattern control"),
        pytest.param({"models": [""]}, id="empty pattern"),
    ],
)
def test_key_fields_refuse_booleans_and_control_characters(
    server: InProcessServer, field: dict[str, object]
) -> None:
    with server.client() as http:
        response = http.post("/api/v1/keys", json={"name": "bad-fields", **field})
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "invalid_request"


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PUT", "/api/v1/keys", {"GET", "POST"}),
        ("DELETE", "/v2/health/live", {"GET"}),
        ("PATCH", "/api/v1/models", {"GET"}),
    ],
)
def test_a_405_names_the_allowed_methods(
    server: InProcessServer, method: str, path: str, allowed: set[str]
) -> None:
    with server.client() as http:
        response = http.request(method, path)
    assert response.status_code == 405, response.text
    assert response.json()["code"] == "method_not_allowed"
    named = {part.strip() for part in response.headers["allow"].split(",")}
    assert allowed <= named and method not in named
