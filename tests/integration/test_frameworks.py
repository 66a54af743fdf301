"""XGBoost, LightGBM, PyTorch and Keras models end to end: pushed with the ``maas``
command to a real server, called with the official Triton clients (HTTP and gRPC),
answering what each framework predicts in process. One server for the module."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http

from tests import framework_models as fm
from tests.integration.server import RunningServer, start_server
from tests.integration.serving_helpers import status, wait_until

_GRPC_LISTENING = "maas gRPC listening on "


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    server = start_server(tmp_path_factory.mktemp("frameworks-home"), "--grpc-port", "0")
    yield server
    assert server.stop() in (0, -signal.SIGTERM), "".join(server.output)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("framework-files")
    return {
        "xgb": fm.write_xgb(fm.xgb_classifier(), folder / "iris.json"),
        "xgb-frame": fm.write_xgb(fm.xgb_frame_regressor(), folder / "petal.ubj"),
        "lgb": fm.write_lgb(fm.lgb_classifier(), folder / "iris.txt"),
        "export": fm.write_export(folder / "mlp.pt2"),
        "torchscript": fm.write_torchscript(folder / "mlp.pt"),
        "keras": fm.write_keras(folder / "mlp.keras"),
        "state-dict": fm.write_state_dict(folder / "mlp.pth"),
        "lambda": fm.write_keras_lambda(folder / "lambda.keras"),
    }


def _maas(server: RunningServer, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "maas",
            "--url",
            server.url,
            "--api-key",
            server.api_key or "",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )


def _push(server: RunningServer, path: str, name: str, *extra: str) -> dict[str, Any]:
    result = _maas(server, "-o", "json", "models", "push", path, "--name", name, *extra)
    assert result.returncode == 0, result.stderr
    pushed: dict[str, Any] = json.loads(result.stdout)
    return pushed


@pytest.fixture(scope="module")
def pushed(server: RunningServer, files: dict[str, Path]) -> dict[str, dict[str, Any]]:
    """Every servable file, pushed once with the CLI, by model name; three at a time,
    as pushes are inspected side by side (torch and keras imports raced there)."""
    declared = json.dumps({"signature": fm.TORCHSCRIPT_SIGNATURE})
    pushes: dict[str, tuple[str, ...]] = {
        "iris-xgb": (str(files["xgb"]),),
        "petal-xgb": (str(files["xgb-frame"]),),
        "iris-lgb": (str(files["lgb"]),),
        "mlp-export": (str(files["export"]),),
        "mlp-script": (str(files["torchscript"]), "--metadata", declared),
        "mlp-keras": (str(files["keras"]),),
    }
    with ThreadPoolExecutor(3) as pool:
        done = {
            name: pool.submit(_push, server, args[0], name, *args[1:])
            for name, args in pushes.items()
        }
        return {name: future.result() for name, future in done.items()}


def _grpc(server: RunningServer) -> Any:
    line = next(line for line in server.output if _GRPC_LISTENING in line)
    return triton_grpc.InferenceServerClient(line.split(_GRPC_LISTENING, 1)[1].strip())


def _auth(server: RunningServer) -> dict[str, str]:
    return {"authorization": f"Bearer {server.api_key}"}


def _http_input(name: str, array: np.ndarray, datatype: str) -> triton_http.InferInput:
    tensor = triton_http.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor


def _grpc_input(name: str, array: np.ndarray, datatype: str) -> Any:
    tensor = triton_grpc.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor


def test_each_framework_is_registered_with_its_platform(
    server: RunningServer, pushed: dict[str, dict[str, Any]]
) -> None:
    frameworks = {name: version["framework"] for name, version in pushed.items()}
    assert frameworks == {
        "iris-xgb": "xgboost",
        "petal-xgb": "xgboost",
        "iris-lgb": "lightgbm",
        "mlp-export": "torch-export",
        "mlp-script": "torchscript",
        "mlp-keras": "keras",
    }
    triton = server.triton()
    platforms = {name: triton.get_model_metadata(name)["platform"] for name in pushed}
    assert platforms == {
        "iris-xgb": "xgboost",
        "petal-xgb": "xgboost",
        "iris-lgb": "lightgbm",
        "mlp-export": "pytorch_export",
        "mlp-script": "pytorch_torchscript",
        "mlp-keras": "keras",
    }


@pytest.mark.parametrize(
    ("name", "model", "datatype"),
    [
        ("iris-xgb", fm.xgb_classifier, "FP32"),
        ("iris-lgb", fm.lgb_classifier, "FP64"),
    ],
)
def test_boosters_over_http_classify_as_the_library_does(
    server: RunningServer,
    pushed: dict[str, dict[str, Any]],
    name: str,
    model: Any,
    datatype: str,
) -> None:
    features = fm.iris()[0]
    dtype = np.float32 if datatype == "FP32" else np.float64
    answer = server.triton().infer(name, [_http_input("input", features.astype(dtype), datatype)])
    np.testing.assert_array_equal(answer.as_numpy("predict"), model().predict(features))
    np.testing.assert_allclose(
        answer.as_numpy("predict_proba"), model().predict_proba(features), rtol=1e-6
    )


def test_a_dataframe_booster_over_grpc_takes_its_columns(
    server: RunningServer, pushed: dict[str, dict[str, Any]]
) -> None:
    frame = fm.iris_frame()[fm.IRIS_COLUMNS[:3]]
    inputs = [
        _grpc_input(column, frame[column].to_numpy(np.float32).reshape(-1, 1), "FP32")
        for column in fm.IRIS_COLUMNS[:3]
    ]
    answer = _grpc(server).infer("petal-xgb", inputs, headers=_auth(server))
    expected = fm.xgb_frame_regressor().predict(frame)
    np.testing.assert_allclose(answer.as_numpy("predict"), expected, rtol=1e-6)


def test_an_exported_program_over_grpc_runs_any_batch(
    server: RunningServer, pushed: dict[str, dict[str, Any]]
) -> None:
    client = _grpc(server)
    for rows in (1, 150):
        features = fm.iris()[0][:rows].astype(np.float32)
        answer = client.infer(
            "mlp-export", [_grpc_input("input", features, "FP32")], headers=_auth(server)
        )
        np.testing.assert_allclose(
            answer.as_numpy("output"), fm.torch_predict(features), rtol=1e-5, atol=1e-6
        )


@pytest.mark.parametrize(
    ("name", "input_name", "output_name", "predict"),
    [
        ("mlp-script", "features", "logits", fm.torch_predict),
        ("mlp-keras", "features", "output", fm.keras_predict),
    ],
)
def test_torchscript_and_keras_over_http_answer_as_in_process(
    server: RunningServer,
    pushed: dict[str, dict[str, Any]],
    name: str,
    input_name: str,
    output_name: str,
    predict: Any,
) -> None:
    features = fm.iris()[0][:40].astype(np.float32)
    answer = server.triton().infer(name, [_http_input(input_name, features, "FP32")])
    np.testing.assert_allclose(
        answer.as_numpy(output_name), predict(features), rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize(
    ("file", "code", "says"),
    [
        ("state-dict", "unsupported_artifact", "torch.export"),
        ("lambda", "untrusted_artifact", "Lambda"),
    ],
)
def test_what_cannot_be_served_is_refused_saying_why(
    server: RunningServer, files: dict[str, Path], file: str, code: str, says: str
) -> None:
    result = _maas(server, "models", "push", str(files[file]), "--name", f"refused-{file}")
    assert result.returncode == 1
    assert f"({code})" in result.stderr and says in result.stderr, result.stderr


def test_a_declared_signature_that_is_no_signature_is_a_400(
    server: RunningServer, files: dict[str, Path]
) -> None:
    metadata = json.dumps({"signature": {"inputs": [{"name": "x", "datatype": "FP99"}]}})
    result = _maas(
        server, "models", "push", str(files["torchscript"]), "--name", "bad", "--metadata", metadata
    )
    assert result.returncode == 1
    assert "(invalid_input)" in result.stderr and "signature" in result.stderr, result.stderr


def test_torchscript_in_a_worker_process_keeps_its_declared_signature(
    server: RunningServer, pushed: dict[str, dict[str, Any]]
) -> None:
    """A worker process loads the model from the version's signature, which its file
    does not carry: it travels with the load options."""
    features = fm.iris()[0][:5].astype(np.float32)
    triton = server.triton()
    triton.infer("mlp-script", [_http_input("features", features, "FP32")])  # loaded
    result = _maas(server, "models", "deploy", "mlp-script:1", "--workers", "processes")
    assert result.returncode == 0, result.stdout + result.stderr
    with server.client() as http:
        wait_until(lambda: status(http, "mlp-script", 1)["workers"] == "processes")
        wait_until(lambda: status(http, "mlp-script", 1)["ready"] is True)
        assert server.process.pid not in status(http, "mlp-script", 1)["pids"]  # type: ignore[operator]
    answer = triton.infer("mlp-script", [_http_input("features", features, "FP32")])
    np.testing.assert_allclose(
        answer.as_numpy("logits"), fm.torch_predict(features), rtol=1e-5, atol=1e-6
    )


def test_a_grpc_channel_outlives_the_servers_connection_recycling(server: RunningServer) -> None:
    """The HTTP/2 parser under the gRPC port ends a connection after 4,096 streams
    (GOAWAY); the official client opens the next one, and no call fails on the way."""
    client = _grpc(server)
    assert all(client.is_server_live() for _ in range(4_500))
