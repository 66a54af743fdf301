"""``WhisperRuntime``: speech to text with faster-whisper on CTranslate2.

The artifact is a CTranslate2 Whisper model directory (``model.bin``, ``config.json``,
``tokenizer.json``, ``vocabulary.*``), pushed as a tar or zip, as
``ct2-transformers-converter`` writes it. It is recognised by content: CTranslate2's
``model.bin`` names its model spec in its header (``WhisperSpec``). Loading runs no code
from the directory: CTranslate2 reads its own weight format.

The V2 contract is one clip per call: ``audio`` (FP32 [1, -1], 16 kHz mono samples in
[-1, 1]; decoding a container is the caller's job, ``maas.runtimes.audio.codec``) and
``options`` (BYTES [1], the JSON of ``TranscriptionOptions``; ``{}`` for defaults), and
``transcript`` (BYTES [1], the JSON of ``Transcript``). The first dimension is fixed, so
serving never batches clips of different lengths together. CTranslate2 releases the
GIL, so instances run in threads.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
from pydantic import ValidationError

from maas.errors import InvalidInput, UnsupportedArtifact
from maas.protocols.audio import Transcript, TranscriptionOptions
from maas.protocols.signature import Signature, TensorSpec
from maas.runtimes.base import ArtifactInfo, LoadOptions, Runtime, texts_of

__all__ = ["WhisperRuntime"]

_SPEC_MARKER = b"WhisperSpec"
SIGNATURE = Signature(
    inputs=[
        TensorSpec(name="audio", datatype="FP32", shape=[1, -1]),
        TensorSpec(name="options", datatype="BYTES", shape=[1]),
    ],
    outputs=[TensorSpec(name="transcript", datatype="BYTES", shape=[1])],
)


def _is_whisper_dir(path: Path) -> bool:
    weights = path / "model.bin"
    if not path.is_dir() or not weights.is_file():
        return False
    with weights.open("rb") as handle:
        return _SPEC_MARKER in handle.read(64)


class WhisperRuntime(Runtime):
    framework: ClassVar[str] = "whisper"
    releases_gil: ClassVar[bool] = True
    v2_platform: ClassVar[str] = "ctranslate2_whisper"

    signature = SIGNATURE

    def __init__(self, model: Any, model_dir: Path) -> None:
        self._model = model
        self.multilingual = bool(model.model.is_multilingual)
        #: ISO 639-1 codes it transcribes (``["en"]`` for an English-only model).
        self.languages: list[str] = list(model.supported_languages)
        self.model_dir = model_dir

    @classmethod
    def recognises(cls, path: Path, filename: str, head: bytes) -> bool:
        return _is_whisper_dir(path)

    @classmethod
    def load(cls, path: Path, *, options: LoadOptions) -> Self:
        if not _is_whisper_dir(path):
            raise UnsupportedArtifact("not a CTranslate2 Whisper model directory")
        from faster_whisper import WhisperModel

        # int8 weights: a third of float32's memory traffic on CPU, which bounds decoding.
        model = WhisperModel(
            str(path), device="cpu", compute_type="int8", cpu_threads=options.threads or 0
        )
        return cls(model, path)

    @classmethod
    def inspect(cls, path: Path, *, options: LoadOptions) -> ArtifactInfo:
        runtime = cls.load(path, options=options)
        try:
            details = {"multilingual": runtime.multilingual, "sample_rate": 16_000}
            return ArtifactInfo(cls.framework, runtime.signature, "speech-to-text", details)
        finally:
            runtime.close()

    def _run(self, inputs: dict[str, np.ndarray], outputs: Sequence[str]) -> dict[str, np.ndarray]:
        audio = inputs["audio"]
        texts = texts_of(inputs["options"], "options")
        results = [
            self.transcribe(audio[row], _options(text)).model_dump_json().encode()
            for row, text in enumerate(texts)
        ]
        return {"transcript": np.array(results, dtype=object)}

    def transcribe(self, audio: np.ndarray, options: TranscriptionOptions) -> Transcript:
        """One clip's transcript (all its segments, decoded now)."""
        language = options.language
        if language is not None and language not in self.languages:
            known = "English only" if self.languages == ["en"] else "Whisper's languages"
            raise InvalidInput(
                f"language: this model knows {known}, not {language!r}",
                details={"param": "language"},
            )
        temperature: Any = (
            options.temperature if options.temperature is not None else [0.0, 0.2, 0.4, 0.6]
        )
        segments, info = self._model.transcribe(
            np.ascontiguousarray(audio, dtype=np.float32),
            task=options.task,
            language=language,
            initial_prompt=options.prompt,
            temperature=temperature,
            word_timestamps=options.word_timestamps,
        )
        found = list(segments)
        words = None
        if options.word_timestamps:
            words = [
                {"word": w.word.strip(), "start": _s(w.start), "end": _s(w.end)}
                for segment in found
                for w in segment.words or ()
            ]
        return Transcript(
            text="".join(segment.text for segment in found).strip(),
            language=str(info.language),
            duration=round(float(info.duration), 3),
            segments=[_segment(segment) for segment in found],
            words=words,
        )

    def close(self) -> None:
        self._model = None


def _options(text: str) -> TranscriptionOptions:
    try:
        data = json.loads(text or "{}")
        return TranscriptionOptions.model_validate(data)
    except (ValueError, ValidationError) as exc:
        raise InvalidInput(f"options: not valid transcription options ({exc})") from None


def _s(value: float) -> float:
    return round(float(value), 3)


def _segment(segment: Any) -> dict[str, Any]:
    """A segment in OpenAI's ``verbose_json`` shape."""
    return {
        "id": int(segment.id) - 1,
        "seek": int(segment.seek),
        "start": _s(segment.start),
        "end": _s(segment.end),
        "text": segment.text,
        "tokens": [int(t) for t in segment.tokens],
        "temperature": float(segment.temperature or 0.0),
        "avg_logprob": float(segment.avg_logprob),
        "compression_ratio": float(segment.compression_ratio),
        "no_speech_prob": float(segment.no_speech_prob),
    }
