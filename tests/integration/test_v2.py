"""KServe V2 over a real server with tritonclient (binary by default) and its errors;
JSON inference, bad input and health are checked in process (``tests/inprocess``)."""

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
    iris_server: RunningServer,
    iris: tuple[np.ndarray, np.ndarray],
    iris_model: LogisticRegression,
) -> None:
    features = iris[0]
    expected = iris_model.predict(features)
    client = _triton(iris_server)

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


def test_triton_client_metadata_and_health(iris_server: RunningServer) -> None:
    client = _triton(iris_server)
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
    iris_server: RunningServer, iris: tuple[np.ndarray, np.ndarray]
) -> None:
    features = iris[0][:5]
    data = triton.InferInput("input", [5, 4], "FP64")
    data.set_data_from_numpy(features, binary_data=False)
    output = triton.InferRequestedOutput("predict_proba", binary_data=False)
    result = _triton(iris_server).infer("iris", [data], outputs=[output], request_id="req-7")
    response = result.get_response()
    assert response["id"] == "req-7"
    assert [o["name"] for o in response["outputs"]] == ["predict_proba"]
    assert result.as_numpy("predict_proba").shape == (5, 3)


def test_triton_client_sees_errors_as_exceptions(iris_server: RunningServer) -> None:
    data = triton.InferInput("input", [1, 3], "FP64")
    data.set_data_from_numpy(np.zeros((1, 3)))
    with pytest.raises(InferenceServerException, match="expected shape"):
        _triton(iris_server).infer("iris", [data])
    with pytest.raises(InferenceServerException):
        _triton(iris_server).get_model_metadata("missing-model")


def test_tritonclient_binary_inference_still_works(iris_server: RunningServer) -> None:
    import tritonclient.http as triton_http

    data = np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float64)
    tensor = triton_http.InferInput("input", list(data.shape), "FP64")
    tensor.set_data_from_numpy(data, binary_data=True)
    result = iris_server.triton().infer("iris", [tensor])
    assert result.as_numpy("predict") is not None
