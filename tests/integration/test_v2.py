"""KServe V2 over a real server: tritonclient (default binary), httpx JSON, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.http as triton
from sklearn.linear_model import LogisticRegression
from tritonclient.utils import InferenceServerException

from tests.integration.server import RunningServer


def _triton(server: RunningServer) -> triton.InferenceServerClient:
    return server.triton()


def test_triton_client_gets_exactly_sklearn_classes_from_demo_models(
    demo_server: RunningServer,
    iris: tuple[np.ndarray, np.ndarray],
    iris_model: LogisticRegression,
) -> None:
    features = iris[0]
    expected = iris_model.predict(features)
    client = _triton(demo_server)

    sk_input = triton.InferInput("input", list(features.shape), "FP64")
    sk_input.set_data_from_numpy(features)  # binary_data=True is tritonclient's default
    result = client.infer("iris", [sk_input])
    np.testing.assert_array_equal(result.as_numpy("predict"), expected)
    assert result.get_response()["model_version"] == "1"

    onnx_input = triton.InferInput("float_input", list(features.shape), "FP32")
    onnx_input.set_data_from_numpy(features.astype(np.float32))
    onnx_result = client.infer("iris-onnx", [onnx_input], model_version="production")
    np.testing.assert_array_equal(onnx_result.as_numpy("label"), expected)
    probabilities = onnx_result.as_numpy("probabilities")
    assert probabilities.shape == (len(features), 3)
    np.testing.assert_allclose(
        probabilities, iris_model.predict_proba(features), rtol=1e-4, atol=1e-5
    )


def test_triton_client_metadata_and_health(demo_server: RunningServer) -> None:
    client = _triton(demo_server)
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("iris")
    assert client.is_model_ready("iris", model_version="production")
    server_meta = client.get_server_metadata()
    assert server_meta["name"] == "maas"
    assert "binary_tensor_data" in server_meta["extensions"]
    meta = client.get_model_metadata("iris")
    assert meta["platform"] == "sklearn"
    assert meta["inputs"] == [{"name": "input", "datatype": "FP64", "shape": [-1, 4]}]
    assert {o["name"] for o in meta["outputs"]} == {"predict", "predict_proba"}
    onnx_meta = client.get_model_metadata("iris-onnx", model_version="1")
    assert onnx_meta["versions"] == ["1"]
    assert onnx_meta["inputs"][0]["datatype"] == "FP32"


def test_triton_client_requested_output_in_json(
    demo_server: RunningServer, iris: tuple[np.ndarray, np.ndarray]
) -> None:
    features = iris[0][:5]
    data = triton.InferInput("input", [5, 4], "FP64")
    data.set_data_from_numpy(features, binary_data=False)
    output = triton.InferRequestedOutput("predict_proba", binary_data=False)
    result = _triton(demo_server).infer("iris", [data], outputs=[output], request_id="req-7")
    response = result.get_response()
    assert response["id"] == "req-7"
    assert [o["name"] for o in response["outputs"]] == ["predict_proba"]
    assert result.as_numpy("predict_proba").shape == (5, 3)


def test_json_infer_with_curl_shape_and_version_header(demo_server: RunningServer) -> None:
    body = {
        "id": "abc",
        "inputs": [
            {
                "name": "input",
                "datatype": "FP64",
                "shape": [2, 4],
                "data": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]],
            }
        ],
        "outputs": [{"name": "predict"}],
    }
    with demo_server.client() as http:
        response = http.post("/v2/models/iris/versions/production/infer", json=body)
    assert response.status_code == 200, response.text
    assert response.headers["x-model-version"] == "1"
    payload = response.json()
    assert payload["model_name"] == "iris"
    assert payload["model_version"] == "1"
    assert payload["id"] == "abc"
    assert payload["outputs"] == [
        {"name": "predict", "datatype": "INT64", "shape": [2], "data": [0, 2]}
    ]


def _infer_json(
    server: RunningServer, path: str, **kwargs: object
) -> tuple[int, dict[str, object]]:
    with server.client() as http:
        response = http.post(path, **kwargs)  # type: ignore[arg-type]
    return response.status_code, response.json()


IRIS_ROW = {"name": "input", "datatype": "FP64", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}


@pytest.mark.parametrize(
    ("path", "kwargs", "status", "code"),
    [
        pytest.param(
            "/v2/models/iris/infer",
            {"json": {"inputs": [{**IRIS_ROW, "shape": [1, 3]}]}},
            400,
            "shape_mismatch",
            id="shape-vs-data",
        ),
        pytest.param(
            "/v2/models/iris/infer",
            {"json": {"inputs": [{**IRIS_ROW, "shape": [2, 2]}]}},
            400,
            "shape_mismatch",
            id="shape-vs-signature",
        ),
        pytest.param(
            "/v2/models/iris/infer",
            {"json": {"inputs": [{**IRIS_ROW, "datatype": "FP99"}]}},
            400,
            "unsupported_datatype",
            id="unknown-datatype",
        ),
        pytest.param(
            "/v2/models/iris/infer",
            {"json": {"inputs": [{**IRIS_ROW, "datatype": "BYTES", "data": ["a", "b", "c", "d"]}]}},
            400,
            "invalid_input",
            id="strings-to-float-model",
        ),
        pytest.param(
            "/v2/models/iris/infer",
            {"json": {"inputs": [{**IRIS_ROW, "data": ["x", 1, 2, 3]}]}},
            400,
            "invalid_input",
            id="data-not-of-datatype",
        ),
        pytest.param(
            "/v2/models/nope/infer",
            {"json": {"inputs": [IRIS_ROW]}},
            404,
            "model_not_found",
            id="unknown-model",
        ),
        pytest.param(
            "/v2/models/iris/versions/99/infer",
            {"json": {"inputs": [IRIS_ROW]}},
            404,
            "version_not_found",
            id="unknown-version",
        ),
        pytest.param(
            "/v2/models/iris/versions/canary/infer",
            {"json": {"inputs": [IRIS_ROW]}},
            404,
            "alias_not_found",
            id="unknown-alias",
        ),
        pytest.param("/v2/models/iris/infer", {}, 400, "invalid_input", id="missing-body"),
        pytest.param(
            "/v2/models/iris/infer",
            {"content": b'{"inputs": [', "headers": {"content-type": "application/json"}},
            400,
            "invalid_input",
            id="malformed-json",
        ),
        pytest.param(
            "/v2/models/iris/infer", {"json": {"inputz": []}}, 400, "invalid_input", id="no-inputs"
        ),
        pytest.param(
            "/v2/models/iris/infer",
            {"json": {"inputs": [IRIS_ROW], "outputs": [{"name": "nope"}]}},
            400,
            "invalid_input",
            id="unknown-output",
        ),
        pytest.param(
            "/v2/models/iris/infer",
            {"json": {"inputs": [{**IRIS_ROW, "name": "other"}]}},
            400,
            "invalid_input",
            id="unknown-input-name",
        ),
        pytest.param(
            "/v2/models/iris/infer",
            {"content": b"{}", "headers": {"Inference-Header-Content-Length": "999"}},
            400,
            "invalid_input",
            id="header-length-past-body",
        ),
    ],
)
def test_bad_inference_requests_get_clear_4xx(
    demo_server: RunningServer, path: str, kwargs: dict[str, object], status: int, code: str
) -> None:
    got_status, body = _infer_json(demo_server, path, **kwargs)
    assert (got_status, body["code"]) == (status, code), body
    assert isinstance(body["error"], str) and body["error"]


def test_oversized_body_is_refused_with_413(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.integration.server import start_server

    server = start_server(tmp_path / "home", "--demo", env={"MAAS_LIMITS__MAX_BODY_BYTES": "4096"})
    try:
        big = {"inputs": [{**IRIS_ROW, "shape": [500, 4], "data": [1.0] * 2000}]}
        status, body = _infer_json(server, "/v2/models/iris/infer", json=big)
        assert (status, body["code"]) == (413, "payload_too_large")

        # A chunked body without Content-Length is capped while it streams.
        def chunks():  # type: ignore[no-untyped-def]
            for _ in range(10):
                yield b" " * 1000

        status, body = _infer_json(server, "/v2/models/iris/infer", content=chunks())
        assert (status, body["code"]) == (413, "payload_too_large")
        # The server still answers afterwards.
        status, _ = _infer_json(server, "/v2/models/iris/infer", json={"inputs": [IRIS_ROW]})
        assert status == 200
    finally:
        server.stop()


def test_triton_client_sees_errors_as_exceptions(demo_server: RunningServer) -> None:
    data = triton.InferInput("input", [1, 3], "FP64")
    data.set_data_from_numpy(np.zeros((1, 3)))
    with pytest.raises(InferenceServerException, match="expected shape"):
        _triton(demo_server).infer("iris", [data])
    with pytest.raises(InferenceServerException):
        _triton(demo_server).get_model_metadata("missing-model")


def test_unknown_route_and_method_are_json_errors(demo_server: RunningServer) -> None:
    with demo_server.client() as http:
        missing = http.get("/v2/nothing/here")
        wrong_method = http.get("/v2/models/iris/infer")
    assert (missing.status_code, missing.json()["code"]) == (404, "not_found")
    assert (wrong_method.status_code, wrong_method.json()["code"]) == (405, "method_not_allowed")


def test_health_endpoints(demo_server: RunningServer) -> None:
    with demo_server.client() as http:
        assert http.get("/v2/health/live").json() == {"live": True}
        assert http.get("/v2/health/ready").json() == {"ready": True}
        assert http.get("/v2/models/iris/ready").status_code == 200
        assert http.get("/v2/models/iris/versions/1/ready").json()["ready"] is True
        assert http.get("/v2/models/nope/ready").status_code == 404
