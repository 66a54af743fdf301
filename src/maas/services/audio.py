"""``AudioService``: what the speech routes ask of serving, in serving's own terms.

A transcription resolves the model, checks that it turns speech into text, decodes the
upload (PyAV, off the event loop, stopping at the duration limit) and runs the 16 kHz
samples through the model's deployment; a speech call checks the format first, runs
the text through the voice model and encodes the samples it answers. Both are one
``ModelManager.predict`` each, so queueing, timeouts, batching specs and the request
metrics are the same as for any tensor call. ``InferenceService`` admits and meters
them; the routers only parse the form or the JSON and write the answer.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import numpy as np

from maas.config import AudioSettings
from maas.errors import PayloadTooLarge, ShuttingDown, UnsupportedTask
from maas.protocols.audio import SpeechRequest, Transcript, TranscriptionOptions
from maas.protocols.management import VersionInfo
from maas.protocols.signature import Signature
from maas.registry.refs import ModelRef, parse_ref
from maas.runtimes.audio import codec
from maas.serving.manager import ModelManager

__all__ = ["AudioService", "Spoken", "Transcribed"]


@dataclass(frozen=True, slots=True)
class Transcribed:
    version: VersionInfo
    transcript: Transcript
    #: Seconds of audio heard: what a transcription is metered in.
    audio_s: float


@dataclass(frozen=True, slots=True)
class Spoken:
    version: VersionInfo
    audio: bytes
    media_type: str
    #: Characters spoken: what speech is metered in.
    characters: int


def _takes(signature: Signature, inputs: tuple[str, ...], output: str) -> bool:
    return all(signature.input(name) for name in inputs) and bool(signature.output(output))


class AudioService:
    def __init__(self, models: ModelManager, settings: AudioSettings | None = None) -> None:
        self._models = models
        self.settings = settings or AudioSettings()

    async def _check_task(
        self, model: str, inputs: tuple[str, ...], output: str, task: str
    ) -> ModelRef:
        """``model`` parsed, once its signature says it does ``task``: a wrong model is
        a 400 before the upload is decoded or the model queued."""
        if self._models.is_shutting_down:
            raise ShuttingDown(retry_after=1.0)
        ref = parse_ref(model)
        info = await self._models.resolve(ref.name, ref.selector)
        if not _takes(info.signature, inputs, output):
            done = info.metadata.get("task") or info.framework
            raise UnsupportedTask(
                f"model {model!r} does not do {task} (its task is {done})",
                details={"param": "model"},
            )
        return ref

    async def transcribe(
        self,
        model: str,
        data: bytes,
        options: TranscriptionOptions,
        *,
        timeout_s: float | None = None,
    ) -> Transcribed:
        """``data`` (any audio container PyAV reads) transcribed or translated."""
        ref = await self._check_task(model, ("audio", "options"), "transcript", "speech to text")
        limit = self.settings.max_upload_bytes
        if len(data) > limit:
            raise PayloadTooLarge(f"the audio file exceeds the limit of {limit} bytes")
        samples = await asyncio.to_thread(
            codec.decode, data, max_duration_s=self.settings.max_duration_s
        )
        inputs = {
            "audio": samples.reshape(1, -1),
            "options": np.array([options.model_dump_json().encode()], dtype=object),
        }
        version, outputs = await self._models.predict(
            ref.name, ref.selector, inputs, ["transcript"], timeout_s=timeout_s
        )
        transcript = Transcript.model_validate_json(outputs["transcript"].reshape(-1)[0])
        return Transcribed(version, transcript, samples.shape[0] / codec.SAMPLE_RATE)

    async def speak(self, request: SpeechRequest, *, timeout_s: float | None = None) -> Spoken:
        """``request.input`` spoken, encoded as ``request.response_format``."""
        encoding = codec.encoding_for(request.response_format)  # before the model runs
        needs = ("text", "voice", "speed")
        ref = await self._check_task(request.model, needs, "audio", "text to speech")
        inputs = {
            "text": np.array([request.input.encode()], dtype=object),
            "voice": np.array([request.voice.encode()], dtype=object),
            "speed": np.array([request.speed], dtype=np.float32),
        }
        version, outputs = await self._models.predict(
            ref.name, ref.selector, inputs, ["audio", "sample_rate"], timeout_s=timeout_s
        )
        rate = int(outputs["sample_rate"].reshape(-1)[0])
        audio = await asyncio.to_thread(
            codec.encode, outputs["audio"].reshape(-1), rate, request.response_format
        )
        return Spoken(version, audio, encoding.media_type, len(request.input))
