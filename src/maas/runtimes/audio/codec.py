"""Audio in and out of containers, with PyAV's bundled FFmpeg (no ffmpeg binary).

``decode`` turns whatever a caller uploads (wav, mp3, ogg, flac, m4a, webm…) into the
16 kHz mono float32 samples Whisper takes, and stops as soon as the audio runs past the
duration limit: a long file costs the decoding of the limit, not of the whole file.
``encode`` turns a synthesizer's 16-bit PCM into the container a speech caller asked
for. PyAV is imported on first use, so the core works without the ``[audio]`` extra.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np

from maas.errors import AudioTooLong, InvalidAudio, MissingExtra, UnsupportedAudioFormat

__all__ = [
    "ENCODINGS",
    "OUTPUT_RATE",
    "SAMPLE_RATE",
    "Encoding",
    "decode",
    "encode",
    "encoding_for",
]

#: What Whisper takes: 16 kHz mono.
SAMPLE_RATE = 16_000


@dataclass(frozen=True, slots=True)
class Encoding:
    """How one speech ``response_format`` is written: PyAV container and codec (None:
    raw samples), the sample format and rate the codec takes, and the media type."""

    container: str | None
    codec: str
    sample_format: str
    media_type: str


#: Every speech format this server writes; the rate is OpenAI's (24 kHz), which every
#: one of these codecs takes (Opus takes no 22.05 kHz, espeak-ng's own rate).
OUTPUT_RATE = 24_000
ENCODINGS: dict[str, Encoding] = {
    "wav": Encoding("wav", "pcm_s16le", "s16", "audio/wav"),
    "mp3": Encoding("mp3", "libmp3lame", "s16p", "audio/mpeg"),
    "opus": Encoding("ogg", "libopus", "s16", "audio/ogg"),
    "aac": Encoding("adts", "aac", "fltp", "audio/aac"),
    "flac": Encoding("flac", "flac", "s16", "audio/flac"),
    "pcm": Encoding(None, "pcm_s16le", "s16", "audio/pcm"),
}


def _av() -> Any:
    try:
        import av
    except ImportError:
        raise MissingExtra("audio", "audio") from None
    return av


def decode(data: bytes, *, max_duration_s: float) -> np.ndarray:
    """The first audio stream of ``data`` as 16 kHz mono float32 in [-1, 1].

    ``InvalidAudio`` for anything PyAV cannot read as audio (no audio stream, a damaged
    container, no samples at all); ``AudioTooLong`` once the decoded audio passes
    ``max_duration_s``.
    """
    av = _av()
    limit = int(max_duration_s * SAMPLE_RATE)
    chunks: list[np.ndarray] = []
    decoded = 0
    try:
        with av.open(io.BytesIO(data), mode="r", metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise InvalidAudio("the file holds no audio stream")
            resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
            frames = [*container.decode(audio=0), None]  # None: flush the resampler
            for frame in frames:
                for out in resampler.resample(frame):
                    samples = out.to_ndarray().reshape(-1)
                    decoded += samples.shape[0]
                    if decoded > limit:
                        raise AudioTooLong(
                            f"the audio is longer than {max_duration_s:g} s",
                            details={"max_duration_s": max_duration_s},
                        )
                    chunks.append(samples)
    except (AudioTooLong, InvalidAudio):
        raise
    except (av.FFmpegError, ValueError, OSError, IndexError, EOFError) as exc:
        raise InvalidAudio(f"the file is not audio that can be decoded ({_reason(exc)})") from None
    if not chunks:
        raise InvalidAudio("the file holds no audio samples")
    pcm = np.concatenate(chunks)
    result: np.ndarray = pcm.astype(np.float32) / 32768.0
    return result


def _reason(exc: Exception) -> str:
    """PyAV's own words, without the path-like parts FFmpeg adds (``'<none>'``)."""
    text = str(getattr(exc, "strerror", None) or exc).strip()
    return text[:200] or type(exc).__name__


def encoding_for(response_format: str) -> Encoding:
    """How ``response_format`` is written, or ``UnsupportedAudioFormat`` naming the
    formats there are."""
    encoding = ENCODINGS.get(response_format)
    if encoding is None:
        raise UnsupportedAudioFormat(
            f"response_format: {response_format!r} is not a format this server writes; "
            f"choose one of {', '.join(ENCODINGS)}",
            details={"param": "response_format"},
        )
    return encoding


def encode(pcm: np.ndarray, rate: int, response_format: str) -> bytes:
    """16-bit mono ``pcm`` at ``rate`` Hz written as ``response_format`` at 24 kHz."""
    encoding = encoding_for(response_format)
    av = _av()
    frame = av.AudioFrame.from_ndarray(
        np.ascontiguousarray(pcm, dtype=np.int16).reshape(1, -1), format="s16", layout="mono"
    )
    frame.sample_rate = rate
    if encoding.container is None:  # raw samples, as OpenAI's pcm: s16le at 24 kHz
        resampler = av.AudioResampler(format="s16", layout="mono", rate=OUTPUT_RATE)
        frames = [*resampler.resample(frame), *resampler.resample(None)]
        return b"".join(f.to_ndarray().astype("<i2").tobytes() for f in frames)
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=encoding.container) as container:
        stream = container.add_stream(encoding.codec, rate=OUTPUT_RATE, layout="mono")
        stream.format = encoding.sample_format
        resampler = av.AudioResampler(
            format=encoding.sample_format, layout="mono", rate=OUTPUT_RATE,
            frame_size=stream.codec_context.frame_size or None,
        )  # fmt: skip
        for out in [*resampler.resample(frame), *resampler.resample(None)]:
            container.mux(stream.encode(out))
        container.mux(stream.encode(None))
    return buffer.getvalue()
