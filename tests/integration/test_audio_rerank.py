"""Speech and rerank against the real demo server, with the official ``openai`` SDK.

The demo registers Whisper tiny.en (CTranslate2) as ``whisper``, an espeak-ng voice
model as ``espeak`` and all-MiniLM-L6-v2 as ``minilm``; the audio the tests send is
spoken by the espeak-ng program here, so every answer comes from real models on real
sound. One server for the module, with small limits so the 413s are cheap to reach.
"""

from __future__ import annotations

import io
import json
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.demo_home import copy_home
from tests.integration.server import RunningServer, start_server
from tests.keys import bearer, limited_key, make_key, usage
from tests.llm_models import espeak_program, minilm_dir, whisper_dir

MAX_UPLOAD_BYTES = 400_000
MAX_DURATION_S = 8.0
DOCUMENTS = [
    "Bananas are a yellow fruit rich in potassium.",
    "Berlin is the capital and largest city of Germany.",
    "Tennis is played with a racket and a ball on a court.",
]


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, demo_template: Path
) -> Iterator[RunningServer]:
    whisper_dir(), minilm_dir(), espeak_program()  # skip (or fail in CI) where absent
    running = start_server(
        copy_home(demo_template, tmp_path_factory.mktemp("audio-home")),
        "--demo",
        env={
            "MAAS_DEMO_MODELS": '["minilm", "whisper", "espeak"]',
            "MAAS_AUDIO__MAX_UPLOAD_BYTES": str(MAX_UPLOAD_BYTES),
            "MAAS_AUDIO__MAX_DURATION_S": str(MAX_DURATION_S),
        },
        timeout_s=300,
    )
    yield running
    assert running.stop() in (0, -signal.SIGTERM), "".join(running.output)


@pytest.fixture(scope="module")
def hello_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ "hello world" spoken by the espeak-ng program itself, not through maas."""
    path = tmp_path_factory.mktemp("audio") / "hello.wav"
    subprocess.run([espeak_program(), "-v", "en-us", "-w", str(path), "hello world"], check=True)
    return path


def _sdk(server: RunningServer, key: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=key or server.api_key, max_retries=0)


def _seconds(audio: bytes) -> float:
    """The duration of ``audio`` as PyAV reads it (any container)."""
    with av.open(io.BytesIO(audio)) as container:
        samples = sum(frame.samples for frame in container.decode(audio=0))
        return samples / container.streams.audio[0].rate


def _openai_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == code
    return error


def _transcribe(
    server: RunningServer, data: bytes, key: str | None = None, **form: str
) -> httpx.Response:
    headers = bearer(key or server.api_key)
    fields = {"model": "whisper", **form}
    with httpx.Client(base_url=server.url, timeout=60, headers=headers) as http:
        return http.post("/v1/audio/transcriptions", data=fields, files={"file": ("a.wav", data)})


# -- speech to text ---------------------------------------------------------------------


def test_sdk_transcribes_spoken_hello_world(server: RunningServer, hello_wav: Path) -> None:
    with _sdk(server) as client, hello_wav.open("rb") as audio:
        result = client.audio.transcriptions.create(model="whisper", file=audio)
    assert "hello" in result.text.lower() and "world" in result.text.lower(), result.text


def test_transcript_formats(server: RunningServer, hello_wav: Path) -> None:
    data = hello_wav.read_bytes()
    with _sdk(server) as client:
        text = client.audio.transcriptions.create(
            model="whisper", file=("a.wav", data), response_format="text"
        )
        verbose = client.audio.transcriptions.create(
            model="whisper",
            file=("a.wav", data),
            response_format="verbose_json",
            timestamp_granularities=["word", "segment"],
        )
    assert isinstance(text, str) and "hello" in text.lower()
    assert verbose.duration == pytest.approx(_seconds(data), abs=0.05)
    assert verbose.language == "en" and verbose.segments and verbose.words
    assert [w.word.lower().strip(".") for w in verbose.words] == ["hello", "world"]
    assert all(0 <= w.start <= w.end <= verbose.duration + 0.5 for w in verbose.words)
    srt = _transcribe(server, data, response_format="srt")
    assert srt.status_code == 200 and srt.headers["content-type"].startswith("application/x-subrip")
    assert re.fullmatch(
        r"1\n00:00:\d\d,\d{3} --> 00:00:\d\d,\d{3}\n.*hello.*\n", srt.text, re.I | re.S
    ), srt.text
    vtt = _transcribe(server, data, response_format="vtt")
    assert vtt.text.startswith("WEBVTT\n\n00:00:00.000 --> 00:00:")
    assert "hello" in vtt.text.lower()
    refused = _transcribe(
        server, data, response_format="text", **{"timestamp_granularities[]": "word"}
    )
    assert _openai_error(refused, 400, "invalid_request")["param"] == "timestamp_granularities"
    english = _transcribe(server, data, language="english")
    assert _openai_error(english, 400, "invalid_request")["param"] == "language"
    german = _transcribe(server, data, language="de")  # tiny.en knows English only
    assert _openai_error(german, 400, "invalid_input")["param"] == "language"


def test_sdk_translates_to_english(server: RunningServer, hello_wav: Path) -> None:
    with _sdk(server) as client, hello_wav.open("rb") as audio:
        result = client.audio.translations.create(model="whisper", file=audio)
    assert "hello" in result.text.lower()


def test_bad_audio_is_a_400_never_a_500(server: RunningServer) -> None:
    for data in (b"RIFF\x00\x00\x00\x00WAVEjunk" * 10, b"not audio at all", b""):
        _openai_error(_transcribe(server, data), 400, "invalid_audio")
    with _sdk(server) as client, pytest.raises(openai.BadRequestError) as raised:
        client.audio.transcriptions.create(model="whisper", file=("a.mp3", b"\xff\xfb" * 100))
    assert raised.value.code == "invalid_audio"


def test_oversized_and_overlong_audio_are_413(server: RunningServer) -> None:
    big = b"\x00" * (MAX_UPLOAD_BYTES + 1)
    _openai_error(_transcribe(server, big), 413, "payload_too_large")
    # Under the size limit but past the duration limit: 16 s of silence at 8 kHz, 8-bit.
    long = subprocess.run(
        ["sox", "-n", "-r", "8000", "-b", "8", "-c", "1", "-t", "wav", "-", "trim", "0", "16"],
        check=True, capture_output=True,
    ).stdout  # fmt: skip
    assert len(long) < MAX_UPLOAD_BYTES
    error = _openai_error(_transcribe(server, long), 413, "audio_too_long")
    assert str(int(MAX_DURATION_S)) in error["message"]


def test_unknown_model_wrong_task_and_hidden_model(server: RunningServer, hello_wav: Path) -> None:
    data = hello_wav.read_bytes()
    with _sdk(server) as client, pytest.raises(openai.NotFoundError) as missing:
        client.audio.transcriptions.create(model="no-such-model", file=("a.wav", data))
    assert missing.value.code == "model_not_found"
    _openai_error(_transcribe(server, data, model="whisper:9"), 404, "model_not_found")
    _openai_error(_transcribe(server, data, model="minilm"), 400, "unsupported_task")
    # A key whose patterns do not match sees the model as missing (as every route does);
    # a key whose role may not infer at all is refused outright.
    iris_only = str(make_key(server, role="consumer", models=["iris*"])["key"])
    _openai_error(_transcribe(server, data, key=iris_only), 404, "model_not_found")
    scraper = str(make_key(server, role="metrics")["key"])
    with _sdk(server, scraper) as client, pytest.raises(openai.PermissionDeniedError) as denied:
        client.audio.speech.create(model="espeak", voice="alloy", input="hi")
    assert denied.value.code == "forbidden"


# -- text to speech ---------------------------------------------------------------------


def test_sdk_speech_is_playable_wav_and_says_what_it_was_given(
    server: RunningServer, tmp_path: Path
) -> None:
    with _sdk(server) as client:
        spoken = client.audio.speech.create(
            model="espeak", voice="alloy", input="hello world", response_format="wav"
        )
    path = tmp_path / "spoken.wav"
    spoken.write_to_file(path)
    info = subprocess.run(["soxi", str(path)], check=True, capture_output=True, text=True).stdout
    assert re.search(r"Channels\s+: 1", info) and re.search(r"Sample Rate\s+: 24000", info), info
    assert (
        0.3
        < float(
            subprocess.run(
                ["soxi", "-D", str(path)], capture_output=True, text=True, check=True
            ).stdout
        )
        < 5
    )
    heard = _transcribe(server, path.read_bytes()).json()["text"]
    assert "hello" in heard.lower(), heard


@pytest.mark.parametrize(
    ("fmt", "magic"),
    [("mp3", (b"ID3", b"\xff\xf3", b"\xff\xfb")), ("flac", (b"fLaC",)), ("opus", (b"OggS",))],
)
def test_speech_formats(server: RunningServer, fmt: str, magic: tuple[bytes, ...]) -> None:
    with _sdk(server) as client:
        spoken = client.audio.speech.create(
            model="espeak",
            voice="fable",
            input="hello world",
            response_format=fmt,
            speed=1.5,  # type: ignore[arg-type]
        )
    audio = spoken.read()
    assert audio.startswith(magic), audio[:8]
    assert 0.2 < _seconds(audio) < 5


def test_speech_refusals(server: RunningServer) -> None:
    with server.client() as http:

        def speak(**body: object) -> httpx.Response:
            return http.post("/v1/audio/speech", json={"model": "espeak", "input": "hi", **body})

        assert (
            _openai_error(speak(response_format="webm"), 400, "unsupported_audio_format")["param"]
            == "response_format"
        )
        assert _openai_error(speak(voice="nobody"), 400, "invalid_input")["param"] == "voice"
        assert _openai_error(speak(speed=9), 400, "invalid_request")["param"] == "speed"
        assert _openai_error(speak(input="x" * 5000), 400, "invalid_request")["param"] == "input"
        _openai_error(speak(model="minilm"), 400, "unsupported_task")


def test_voice_models_are_versioned_aliased_and_rate_limited(server: RunningServer) -> None:
    """A new voice mapping is a new version of the model; the alias keeps serving the
    old one until it moves, and a key's request limit holds for speech as for any call."""
    voices = {"engine": "espeak-ng", "voices": {"alloy": "en-gb"}, "default_voice": "alloy"}
    with server.client() as http:
        pushed = http.post(
            "/api/v1/models/espeak/versions",
            params={"filename": "voices.json"},
            content=json.dumps(voices).encode(),
        )
        assert pushed.status_code == 201, pushed.text
        version = pushed.json()["version"]
        assert pushed.json()["framework"] == "espeak-ng"

        def speak(model: str, voice: str) -> httpx.Response:
            body = {"model": model, "input": "hi", "voice": voice}
            return http.post("/v1/audio/speech", json=body)

        assert speak(f"espeak:{version}", "alloy").status_code == 200
        assert _openai_error(speak(f"espeak:{version}", "echo"), 400, "invalid_input")
        assert speak("espeak", "echo").headers["x-model-version"] == "1"  # production: v1
    _, key = limited_key(server, str(server.api_key), requests_per_minute=1)
    with _sdk(server, key) as client:
        client.audio.speech.create(model="espeak", voice="alloy", input="once").read()
        with pytest.raises(openai.RateLimitError) as limited:
            client.audio.speech.create(model="espeak", voice="alloy", input="twice")
    assert limited.value.code == "rate_limited"


# -- rerank -----------------------------------------------------------------------------


def test_rerank_puts_the_relevant_passage_first_on_every_path(server: RunningServer) -> None:
    body = {"model": "minilm", "query": "What is the capital of Germany?", "documents": DOCUMENTS}
    with server.client() as http:
        for path in ("/v1/rerank", "/rerank", "/v2/rerank"):
            answer = http.post(path, json=body)
            assert answer.status_code == 200, answer.text
            result = answer.json()
            assert result["model"] == "minilm" and result["id"].startswith("rerank-")
            indices = [item["index"] for item in result["results"]]
            scores = [item["relevance_score"] for item in result["results"]]
            assert indices[0] == 1 and sorted(indices) == [0, 1, 2], result
            assert scores == sorted(scores, reverse=True) and -1 <= scores[-1] <= scores[0] <= 1
            assert result["results"][0]["document"] == {"text": DOCUMENTS[1]}
            assert result["usage"]["total_tokens"] > sum(len(d.split()) for d in DOCUMENTS)
        top = http.post("/v1/rerank", json={**body, "top_n": 1, "return_documents": False}).json()
        assert [set(item) for item in top["results"]] == [{"index", "relevance_score"}]
        assert top["results"][0]["index"] == 1
        _openai_error(http.post("/rerank", json={**body, "documents": []}), 400, "invalid_request")
        _openai_error(
            http.post("/v2/rerank", json={**body, "model": "nope"}), 404, "model_not_found"
        )
        _openai_error(
            http.post("/v1/rerank", json={**body, "model": "espeak"}), 400, "unsupported_task"
        )


# -- metering and metrics ---------------------------------------------------------------


def test_usage_records_audio_seconds_characters_and_tokens(
    server: RunningServer, hello_wav: Path
) -> None:
    created = make_key(server, role="consumer", name="speech-usage")
    key = str(created["key"])
    data = hello_wav.read_bytes()
    assert _transcribe(server, data, key=key).status_code == 200
    with _sdk(server, key) as client:
        client.audio.speech.create(model="espeak", voice="nova", input="Guten Tag!").read()
    with server.client(headers=bearer(key)) as http:
        ranked = http.post(
            "/v1/rerank", json={"model": "minilm", "query": "capital", "documents": DOCUMENTS}
        ).json()
    rows = {row["model"]: row for row in usage(server, key, group_by="model")}
    assert rows["whisper"]["audio_s"] == pytest.approx(_seconds(data), abs=0.01)
    assert rows["espeak"]["characters"] == len("Guten Tag!")
    assert rows["minilm"]["prompt_tokens"] == ranked["usage"]["total_tokens"]
    assert all(rows[m]["requests"] == 1 and rows[m]["errors"] == 0 for m in rows)


def test_requests_are_counted_in_metrics_by_model(server: RunningServer, hello_wav: Path) -> None:
    def count(model: str) -> float:
        text = httpx.get(f"{server.url}/metrics", headers=server.auth_headers).text
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "maas_requests_total"
            and sample.labels.get("model") == model
            and sample.labels.get("code") == "200"
        )

    before = count("whisper"), count("espeak")
    assert _transcribe(server, hello_wav.read_bytes()).status_code == 200
    with server.client() as http:
        http.post("/v1/audio/speech", json={"model": "espeak", "input": "hi"}).raise_for_status()
    deadline = time.monotonic() + 5
    while (count("whisper"), count("espeak")) != (before[0] + 1, before[1] + 1):
        assert time.monotonic() < deadline, (before, count("whisper"), count("espeak"))
        time.sleep(0.1)


def test_the_maas_sdk_transcribes_speaks_and_reranks(
    server: RunningServer, hello_wav: Path
) -> None:
    """The same three calls through ``maas.client``, sync and async, errors included."""
    import anyio

    from maas.client import AsyncClient, Client
    from maas.errors import ModelNotFound

    with Client(server.url, api_key=server.api_key) as client:
        heard = client.transcribe("whisper", hello_wav)
        assert "hello" in heard["text"].lower()
        subtitles = client.transcribe("whisper", hello_wav.read_bytes(), response_format="srt")
        assert isinstance(subtitles, str) and "-->" in subtitles
        spoken = client.speak("espeak", "hello world", response_format="wav")
        assert spoken[:4] == b"RIFF" and _seconds(spoken) > 0.3
        ranked = client.rerank("minilm", "What is the capital of Germany?", DOCUMENTS, top_n=2)
        assert [r["index"] for r in ranked][:1] == [1] and len(ranked) == 2
        with pytest.raises(ModelNotFound):
            client.rerank("no-such-model", "q", DOCUMENTS)

    async def in_async() -> list[dict[str, Any]]:
        async with AsyncClient(server.url, api_key=server.api_key) as client:
            heard = await client.transcribe("whisper", hello_wav)
            assert "hello" in heard["text"].lower()
            return await client.rerank("minilm", "Which fruit is yellow?", DOCUMENTS)

    assert anyio.run(in_async)[0]["index"] == 0
