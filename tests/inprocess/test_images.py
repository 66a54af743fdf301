"""An image classifier pushed as a tar and called in process: the multipart endpoint,
V2 JSON with base64 images, a batch in which one image is bad, and the chat refusal."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.image_models import colour_model, pack, png
from tests.inprocess.app import InProcess, in_process

pytestmark = pytest.mark.anyio

RED, BLUE = png((240, 20, 20)), png((10, 10, 230))


@pytest.fixture(scope="module")
async def served(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[InProcess]:
    root = tmp_path_factory.mktemp("images")
    archive = pack(colour_model(root / "model"), root / "colours.tar")
    async with in_process(root / "home") as app, app.client() as http:
        pushed = await http.post(
            "/api/v1/models/colours/versions",
            params={"filename": "colours.tar", "alias": "production"},
            content=archive.read_bytes(),
        )
        assert pushed.status_code in (200, 201), pushed.text
        assert pushed.json()["framework"] == "onnx-image"
        yield app


async def test_multipart_files_are_classified_in_order(served: InProcess) -> None:
    files = [("image", ("r.png", RED, "image/png")), ("image", ("b.png", BLUE, "image/png"))]
    async with served.client() as http:
        response = await http.post("/v2/models/colours/versions/1/classify", files=files)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["filename"] for r in results] == ["r.png", "b.png"]
    assert [r["labels"][0]["label"] for r in results] == ["red", "blue"]
    assert len(results[0]["labels"]) == 2  # the model's top_k


async def test_v2_json_takes_base64_and_data_urls(served: InProcess) -> None:
    text = base64.b64encode(BLUE).decode()
    body = {
        "inputs": [
            {
                "name": "image",
                "datatype": "BYTES",
                "shape": [2],
                "data": [text, "data:image/png;base64," + base64.b64encode(RED).decode()],
            }
        ],
        "outputs": [{"name": "label"}],
    }
    async with served.client() as http:
        response = await http.post("/v2/models/colours/infer", json=body)
    assert response.status_code == 200, response.text
    (output,) = response.json()["outputs"]
    assert output["data"] == ["blue", "red"]


async def test_a_bad_image_in_a_batch_fails_alone(served: InProcess) -> None:
    async with served.client() as http:
        spec = {"max_batch_size": 8, "max_queue_delay_us": 50_000}
        put = await http.put("/api/v1/models/colours/versions/1/deployment", json=spec)
        assert put.status_code == 200, put.text

        async def classify(data: bytes) -> httpx.Response:
            return await http.post("/v2/models/colours/classify", files={"image": data})

        answers = await asyncio.gather(*(classify(d) for d in (RED, b"broken", BLUE, RED)))
    assert [a.status_code for a in answers] == [200, 400, 200, 200]
    assert answers[1].json()["code"] == "invalid_image"
    labels = [a.json()["results"][0]["labels"][0]["label"] for a in answers if a.is_success]
    assert labels == ["red", "blue", "red"]


async def test_wrong_requests_are_4xx_with_codes(served: InProcess) -> None:
    async with served.client() as http:
        wrong_type = await http.post("/v2/models/colours/classify", json={"image": "x"})
        missing = await http.post("/v2/models/nothing/classify", files={"image": RED})
        anonymous = await http.post(
            "/v2/models/colours/classify", files={"image": RED}, headers={"Authorization": ""}
        )
        chat = await http.post(
            "/v1/chat/completions",
            json={
                "model": "colours",
                "messages": [
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}
                ],
            },
        )
    assert (wrong_type.status_code, wrong_type.json()["code"]) == (415, "unsupported_media_type")
    assert missing.status_code == 404
    assert anonymous.status_code == 401
    assert chat.status_code == 400
    assert chat.json()["error"]["code"] == "unsupported_content"


async def test_a_form_that_does_not_parse_is_a_400_on_every_form_route(served: InProcess) -> None:
    """Image classification and transcription read forms through one reader: a body
    that claims to be a form and is not, or holds too many files, is a 400, never a 500."""
    damaged = b'--xyz\r\nContent-Disposition: form-data; name="image"; filename="a"\r\n'
    headers = {"Content-Type": "multipart/form-data; boundary=xyz"}
    too_many = [("image", (f"{i}.png", RED, "image/png")) for i in range(65)]
    async with served.client() as http:
        for path in ("/v2/models/colours/classify", "/v1/audio/transcriptions"):
            broken = await http.post(path, content=damaged, headers=headers)
            assert broken.status_code == 400, (path, broken.text)
        crowded = await http.post("/v2/models/colours/classify", files=too_many)
        audio_json = await http.post("/v1/audio/transcriptions", json={"model": "x"})
    assert crowded.status_code == 400, crowded.text
    assert crowded.json()["code"] == "invalid_request"
    assert audio_json.status_code == 415
    assert audio_json.json()["error"]["code"] == "unsupported_media_type"
