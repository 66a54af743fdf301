"""Image classification over a real server: the demo's EfficientNet-Lite0 (exported to
ONNX once, at this module's server's first start) classifies scikit-image's coffee cup
over V2 REST (binary and JSON), gRPC and the multipart ``classify`` endpoint; bad and
oversized images are refused with their codes, and a chat with an image part is too."""

from __future__ import annotations

import base64
import io
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import openai
import pytest
import skimage.data
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from PIL import Image
from tritonclient.utils import InferenceServerException

from tests.integration.server import RunningServer, start_server

#: Large enough for the coffee cup (600x400; 72 kB as JPEG, 450 kB as PNG), small
#: enough to test.
MAX_PIXELS = 1_000_000
MAX_BYTES = 600_000


def _encoded(array: np.ndarray, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, fmt, **options)
    return buffer.getvalue()


COFFEE = skimage.data.coffee()
COFFEE_JPEG = _encoded(COFFEE, "JPEG", quality=90)


@pytest.fixture(scope="module")
def vision(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    server = start_server(
        tmp_path_factory.mktemp("vision-home"),
        "--demo",
        "--grpc-port",
        "0",
        env={
            "MAAS_DEMO_MODELS": '["efficientnet"]',
            "MAAS_LIMITS__MAX_IMAGE_PIXELS": str(MAX_PIXELS),
            "MAAS_LIMITS__MAX_IMAGE_BYTES": str(MAX_BYTES),
        },
        timeout_s=300,  # the first start exports the model from torch
    )
    yield server
    assert server.stop() in (0, -signal.SIGTERM), "".join(server.output)


def _grpc_url(server: RunningServer) -> str:
    for line in server.output:
        if match := re.search(r"maas gRPC listening on (\S+)", line):
            return match[1].replace("0.0.0.0", "127.0.0.1")
    raise AssertionError("no gRPC address in the server's output")


def _images(*items: bytes) -> np.ndarray:
    array = np.empty(len(items), dtype=object)
    array[:] = list(items)
    return array


def _top3(labels: np.ndarray) -> list[str]:
    return [label.decode() for label in labels[:3]]


def test_v2_metadata_says_the_model_takes_encoded_images(vision: RunningServer) -> None:
    meta = vision.triton().get_model_metadata("efficientnet")
    assert meta["inputs"] == [{"name": "image", "datatype": "BYTES", "shape": [-1]}]
    assert meta["platform"] == "onnxruntime_onnx"
    with vision.client() as http:
        version = http.get("/api/v1/models/efficientnet/versions/1").json()
    assert version["framework"] == "onnx-image"
    preprocessing = version["metadata"]["preprocessing"]
    assert (preprocessing["resize"], preprocessing["crop"]) == (256, [224, 224])


def test_coffee_is_espresso_over_v2_binary_json_and_grpc(vision: RunningServer) -> None:
    client = vision.triton()
    binary = triton_http.InferInput("image", [2], "BYTES")
    binary.set_data_from_numpy(_images(COFFEE_JPEG, _encoded(COFFEE, "PNG")))  # binary
    result = client.infer("efficientnet", [binary], model_version="production")
    top = result.as_numpy("top_labels")
    assert top.shape == (2, 5)
    assert "espresso" in _top3(top[0]) and "espresso" in _top3(top[1])
    assert result.as_numpy("probabilities").shape == (2, 1000)

    # JSON carries binary data as base64 text.
    as_text = triton_http.InferInput("image", [1], "BYTES")
    as_text.set_data_from_numpy(_images(base64.b64encode(COFFEE_JPEG)), binary_data=False)
    wanted = triton_http.InferRequestedOutput("label", binary_data=False)
    label = client.infer("efficientnet", [as_text], outputs=[wanted]).as_numpy("label")
    assert label.tolist() == ["espresso"]  # JSON output: text

    grpc = triton_grpc.InferenceServerClient(_grpc_url(vision))
    tensor = triton_grpc.InferInput("image", [1], "BYTES")
    tensor.set_data_from_numpy(_images(_encoded(COFFEE, "WEBP", quality=90)))
    headers = {"authorization": f"Bearer {vision.api_key}"}
    answer = grpc.infer("efficientnet", [tensor], headers=headers)
    assert "espresso" in _top3(answer.as_numpy("top_labels")[0])


def test_multipart_classify_answers_top_labels_per_file(vision: RunningServer) -> None:
    files = [
        ("image", ("coffee.jpg", COFFEE_JPEG, "image/jpeg")),
        ("image", ("coffee.png", _encoded(COFFEE, "PNG"), "image/png")),
    ]
    with vision.client() as http:
        response = http.post("/v2/models/efficientnet/classify", files=files)
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["model_name"], body["model_version"]) == ("efficientnet", "1")
        assert [r["filename"] for r in body["results"]] == ["coffee.jpg", "coffee.png"]
        for result in body["results"]:
            assert len(result["labels"]) == 5
            assert "espresso" in [entry["label"] for entry in result["labels"][:3]]
            scores = [entry["score"] for entry in result["labels"]]
            assert scores == sorted(scores, reverse=True) and 0 < scores[0] <= 1

        two = http.post(
            "/v2/models/efficientnet/versions/production/classify?top_k=2", files=files[:1]
        )
        assert len(two.json()["results"][0]["labels"]) == 2
        not_a_form = http.post("/v2/models/efficientnet/classify", content=COFFEE_JPEG)
        assert not_a_form.status_code == 415
        no_file = http.post("/v2/models/efficientnet/classify", files=[("other", COFFEE_JPEG)])
        assert (no_file.status_code, no_file.json()["code"]) == (400, "invalid_input")
        bad_k = http.post("/v2/models/efficientnet/classify?top_k=0", files=files[:1])
        assert bad_k.status_code == 400


def test_the_maas_sdk_classifies_files_and_bytes(vision: RunningServer, tmp_path: Path) -> None:
    from maas.client import Client
    from maas.errors import ModelNotFound

    path = tmp_path / "coffee.png"
    path.write_bytes(_encoded(COFFEE, "PNG"))
    with Client(vision.url, api_key=vision.api_key) as client:
        results = client.classify("efficientnet:production", [path, COFFEE_JPEG], top_k=3)
        assert [r["filename"] for r in results] == ["coffee.png", "image"]
        for result in results:
            assert "espresso" in [entry["label"] for entry in result["labels"]]
            assert len(result["labels"]) == 3
        with pytest.raises(ModelNotFound):
            client.classify("no-such-model", [COFFEE_JPEG])


def test_bad_and_oversized_images_are_refused_with_their_codes(vision: RunningServer) -> None:
    garbage = b"\xff\xd8\xff this is not a JPEG"
    too_many_pixels = _encoded(np.zeros((1000, 1001, 3), np.uint8), "PNG")  # 3 kB
    noise = np.random.default_rng(0).integers(0, 256, (500, 500, 3), dtype=np.uint8)
    too_many_bytes = _encoded(noise, "PNG")
    assert len(too_many_pixels) < MAX_BYTES < len(too_many_bytes)
    cases = [
        (garbage, 400, "invalid_image", "does not decode"),
        (too_many_pixels, 413, "image_too_large", "1001x1000 pixels"),
        (too_many_bytes, 413, "image_too_large", f"over the limit of {MAX_BYTES}"),
    ]
    with vision.client() as http:
        for data, status, code, message in cases:
            response = http.post("/v2/models/efficientnet/classify", files={"image": data})
            assert (response.status_code, response.json()["code"]) == (status, code)
            assert message in response.json()["error"]
    client = vision.triton()
    for data, status, _, message in cases:
        tensor = triton_http.InferInput("image", [1], "BYTES")
        tensor.set_data_from_numpy(_images(data))
        with pytest.raises(InferenceServerException, match=message) as refused:
            client.infer("efficientnet", [tensor])
        assert refused.value.status() == str(status)
    # The server is still well: the next image is classified.
    tensor = triton_http.InferInput("image", [1], "BYTES")
    tensor.set_data_from_numpy(_images(COFFEE_JPEG))
    assert client.infer("efficientnet", [tensor]).as_numpy("label").tolist() == [b"espresso"]


def test_image_calls_are_metered_and_counted_like_any(vision: RunningServer) -> None:
    with vision.client() as http:
        http.post("/v2/models/efficientnet/classify", files={"image": COFFEE_JPEG})
        rows = http.get("/api/v1/usage", params={"group_by": "model"}).json()["rows"]
        metrics = http.get("/metrics").text
    assert any(row["model"] == "efficientnet" and row["requests"] >= 1 for row in rows), rows
    counted = [line for line in metrics.splitlines() if line.startswith("maas_requests_total{")]
    assert any('model="efficientnet"' in line and 'code="200"' in line for line in counted)


def test_a_chat_with_an_image_part_is_refused_by_code(vision: RunningServer) -> None:
    sdk = openai.OpenAI(base_url=f"{vision.url}/v1", api_key=vision.api_key, max_retries=0)
    url = "data:image/jpeg;base64," + base64.b64encode(COFFEE_JPEG).decode()
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.chat.completions.create(
            model="efficientnet",
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is in this cup?"},
                        {"type": "image_url", "image_url": {"url": url}},
                    ],
                }
            ],
        )
    assert refused.value.body["code"] == "unsupported_content"  # type: ignore[index]
    assert "image" in refused.value.body["message"]  # type: ignore[index]


def test_the_export_left_torch_out_of_the_server(vision: RunningServer) -> None:
    maps = Path(f"/proc/{vision.process.pid}/maps")
    assert "libtorch" not in maps.read_text()
