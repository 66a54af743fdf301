"""OpenAI's audio API as pure data: what a transcription or speech call asks for, what a
speech-to-text model answers, and the five shapes a transcript is written in.

``TranscriptionOptions`` is also the contract of a Whisper model's V2 ``options`` input
(one JSON string), so a V2 caller and the OpenAI route ask the runtime the same
things, checked by the same schema. ``Transcript`` is the runtime's ``transcript``
output (one JSON string) read back. Requests keep OpenAI's bounds; fields that would
change the answer and that maas does not implement are refused by name.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

__all__ = [
    "TRANSCRIPT_FORMATS",
    "SpeechRequest",
    "Transcript",
    "TranscriptionOptions",
    "TranscriptionRequest",
    "render_transcript",
]

TranscriptFormat = Literal["json", "text", "srt", "vtt", "verbose_json"]
TRANSCRIPT_FORMATS: tuple[str, ...] = ("json", "text", "srt", "vtt", "verbose_json")
#: Speech input is OpenAI's bound; the voice model may set a lower one.
MAX_SPEECH_CHARS = 4096
_LANGUAGE = re.compile(r"[a-z]{2,3}")


def _iso_code(value: str | None) -> str | None:
    if value is not None and not _LANGUAGE.fullmatch(value):
        raise ValueError("language takes an ISO 639-1 code such as 'en'")
    return value


class TranscriptionOptions(BaseModel):
    """How to transcribe: Whisper's task, the spoken language (ISO 639-1; None: detect),
    a prompt that primes the vocabulary, one sampling temperature (None: Whisper's
    fallback from 0.0 up to 1.0), and whether to time each word."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    task: Literal["transcribe", "translate"] = "transcribe"
    language: str | None = None
    prompt: str | None = Field(None, max_length=4096)
    temperature: float | None = Field(None, ge=0.0, le=1.0)
    word_timestamps: bool = False

    @field_validator("language")
    @classmethod
    def _iso_code(cls, value: str | None) -> str | None:
        return _iso_code(value)


class TranscriptionRequest(BaseModel):
    """The form fields of ``/v1/audio/transcriptions`` and ``/translations`` (the file
    travels beside them)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    model: str = Field(min_length=1, max_length=300)
    language: str | None = None
    prompt: str | None = Field(None, max_length=4096)
    response_format: TranscriptFormat = "json"
    temperature: float | None = Field(None, ge=0.0, le=1.0)
    timestamp_granularities: list[Literal["word", "segment"]] = Field(default_factory=list)
    #: Refused when set: streaming a transcript is not implemented.
    stream: bool = False

    @field_validator("language")
    @classmethod
    def _iso_code(cls, value: str | None) -> str | None:
        return _iso_code(value or None)

    @field_validator("stream")
    @classmethod
    def _no_stream(cls, value: bool) -> bool:
        if value:
            raise ValueError("streaming transcripts is not supported; leave stream unset")
        return value

    @field_validator("timestamp_granularities")
    @classmethod
    def _need_verbose_json(cls, value: list[str], info: ValidationInfo) -> list[str]:
        """Only ``verbose_json`` carries timings, so OpenAI refuses them elsewhere."""
        if value and info.data.get("response_format") != "verbose_json":
            raise ValueError("timestamp granularities need response_format verbose_json")
        return value

    def options(self, task: Literal["transcribe", "translate"]) -> TranscriptionOptions:
        """The model's options; word timings only when asked for."""
        words = "word" in self.timestamp_granularities
        return TranscriptionOptions(
            task=task,
            language=self.language or None,
            prompt=self.prompt or None,
            temperature=self.temperature,
            word_timestamps=words,
        )


class SpeechRequest(BaseModel):
    """The body of ``/v1/audio/speech``. ``response_format`` is checked against the
    encoders this server has (``maas.runtimes.audio.codec``), not here."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    model: str = Field(min_length=1, max_length=300)
    input: str = Field(min_length=1, max_length=MAX_SPEECH_CHARS)
    voice: str = Field("alloy", min_length=1, max_length=64)
    response_format: str = "wav"
    speed: float = Field(1.0, ge=0.25, le=4.0)
    #: Refused when set: espeak-ng follows no free-text instructions.
    instructions: str | None = None
    stream_format: Literal["audio"] = "audio"

    @field_validator("instructions")
    @classmethod
    def _no_instructions(cls, value: str | None) -> str | None:
        if value:
            raise ValueError("instructions are not supported by this speech model")
        return value


class Transcript(BaseModel):
    """What a speech-to-text model answers: the text, the language it heard, the
    audio's duration in seconds, its segments and (when asked for) its words."""

    model_config = ConfigDict(frozen=True)

    text: str
    language: str
    duration: float
    segments: list[dict[str, Any]] = Field(default_factory=list)
    words: list[dict[str, Any]] | None = None


def render_transcript(
    transcript: Transcript, response_format: str, task: str
) -> tuple[bytes | dict[str, Any], str]:
    """The answer's body (a dict to encode as JSON, or text) and its media type."""
    usage = {"type": "duration", "seconds": round(transcript.duration, 3)}
    if response_format == "json":
        return {"text": transcript.text, "usage": usage}, "application/json"
    if response_format == "verbose_json":
        body: dict[str, Any] = {
            "task": task,
            "language": transcript.language,
            "duration": transcript.duration,
            "text": transcript.text,
            "segments": transcript.segments,
            "usage": usage,
        }
        if transcript.words is not None:
            body["words"] = transcript.words
        return body, "application/json"
    if response_format == "text":
        return (transcript.text + "\n").encode(), "text/plain; charset=utf-8"
    if response_format == "srt":
        return _cues(transcript, ",", numbered=True).encode(), "application/x-subrip"
    assert response_format == "vtt"
    return ("WEBVTT\n\n" + _cues(transcript, ".", numbered=False)).encode(), "text/vtt"


def _cues(transcript: Transcript, decimal: str, *, numbered: bool) -> str:
    cues = []
    for number, segment in enumerate(transcript.segments, start=1):
        start = _timestamp(float(segment["start"]), decimal)
        end = _timestamp(float(segment["end"]), decimal)
        head = f"{number}\n" if numbered else ""
        cues.append(f"{head}{start} --> {end}\n{str(segment['text']).strip()}\n")
    return "\n".join(cues)


def _timestamp(seconds: float, decimal: str) -> str:
    millis = round(seconds * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal}{millis:03d}"
