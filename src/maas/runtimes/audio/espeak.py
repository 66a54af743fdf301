"""``EspeakRuntime``: text to speech with espeak-ng, a formant synthesizer.

espeak-ng has no weights to push: its voices come with the program (Debian's
``espeak-ng`` package). What is versioned is the *voice model*: a small JSON file that
names the engine and says which espeak-ng voice each OpenAI voice name speaks with,
the longest input it takes and how long one synthesis may run::

    {"engine": "espeak-ng", "voices": {"alloy": "en-us", "fable": "en-gb"},
     "default_voice": "alloy", "max_input_chars": 4096, "timeout_s": 30}

So a model owner can push a new voice mapping as a new version, alias it, and roll it
back as any model. The file names no program and no path: the runtime runs the
``espeak-ng`` found on the server's ``PATH``, as a subprocess without a shell, with the
text on stdin (never in its arguments), within the timeout.

The V2 contract: ``text`` (BYTES [1]), ``voice`` (BYTES [1]; an OpenAI name from the
file, or empty for the default) and ``speed`` (FP32 [1], OpenAI's 0.25 to 4.0, 1.0 being
espeak-ng's 175 words per minute); ``audio`` (INT16 [1, -1], mono samples) and
``sample_rate`` (INT32 [1]). Encoding the samples as wav, mp3… is the caller's part
(``maas.runtimes.audio.codec``).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from maas.errors import ContextLengthExceeded, InvalidInput, RuntimeFailure, UnsupportedArtifact
from maas.protocols.management import DeploymentSpec
from maas.protocols.signature import Signature, TensorSpec
from maas.runtimes.base import ArtifactInfo, LoadOptions, Runtime, texts_of

__all__ = ["EspeakRuntime", "VoiceModel"]

ENGINE = "espeak-ng"
#: A voice file is small; anything larger is not one (and is not read whole).
_MAX_FILE_BYTES = 64 * 1024
#: espeak-ng voice names and variants (``en-us``, ``en-gb-x-rp``, ``en+f3``): no path,
#: no option.
_VOICE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_+\-]{0,63}")
_WORDS_PER_MINUTE = 175  # espeak-ng's default rate: OpenAI's speed 1.0
_RATE_RANGE = (80, 450)  # what espeak-ng accepts
#: Each call is a process of its own, and an instance holds nothing but the voice file:
#: several instances let calls run side by side instead of queueing behind one.
PARALLEL = DeploymentSpec(instances=4)
SIGNATURE = Signature(
    inputs=[
        TensorSpec(name="text", datatype="BYTES", shape=[1]),
        TensorSpec(name="voice", datatype="BYTES", shape=[1]),
        TensorSpec(name="speed", datatype="FP32", shape=[1]),
    ],
    outputs=[
        TensorSpec(name="audio", datatype="INT16", shape=[1, -1]),
        TensorSpec(name="sample_rate", datatype="INT32", shape=[1]),
    ],
)


class VoiceModel(BaseModel):
    """The voice model file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    engine: str
    voices: dict[str, str] = Field(min_length=1, max_length=64)
    default_voice: str
    max_input_chars: int = Field(4096, ge=1, le=100_000)
    timeout_s: float = Field(30.0, gt=0, le=600)

    @model_validator(mode="after")
    def _consistent(self) -> VoiceModel:
        if self.engine != ENGINE:
            raise ValueError(f"engine must be {ENGINE!r}")
        bad = [v for v in self.voices.values() if not _VOICE.fullmatch(v)]
        if bad:
            raise ValueError(f"not an espeak-ng voice name: {bad[0]!r}")
        if self.default_voice not in self.voices:
            raise ValueError("default_voice must be one of voices")
        return self


def _read(path: Path) -> dict[str, Any] | None:
    """The file's JSON object if it is a small JSON file naming espeak-ng, else None."""
    if not path.is_file() or path.stat().st_size > _MAX_FILE_BYTES:
        return None
    try:
        data = json.loads(path.read_bytes())
    except (ValueError, OSError):
        return None
    return data if isinstance(data, dict) and data.get("engine") == ENGINE else None


def _program() -> str:
    program = shutil.which(ENGINE)
    if program is None:
        raise UnsupportedArtifact(
            "the espeak-ng runtime needs the espeak-ng program on this server "
            "(Debian and Ubuntu: apt install espeak-ng)"
        )
    return program


class EspeakRuntime(Runtime):
    framework: ClassVar[str] = ENGINE
    # Each call waits on a subprocess, which releases the GIL: threads scale.
    releases_gil: ClassVar[bool] = True

    signature = SIGNATURE

    def __init__(self, voices: VoiceModel, program: str) -> None:
        self.voices = voices
        self._program = program

    @classmethod
    def recognises(cls, path: Path, filename: str, head: bytes) -> bool:
        return head.lstrip()[:1] == b"{" and _read(path) is not None

    @classmethod
    def load(cls, path: Path, *, options: LoadOptions) -> Self:
        data = _read(path)
        if data is None:
            raise UnsupportedArtifact(f"not an {ENGINE} voice model file")
        try:
            voices = VoiceModel.model_validate(data)
        except ValidationError as exc:
            problem = exc.errors()[0].get("msg", "invalid")
            raise UnsupportedArtifact(f"the {ENGINE} voice model is invalid: {problem}") from None
        return cls(voices, _program())

    @classmethod
    def inspect(cls, path: Path, *, options: LoadOptions) -> ArtifactInfo:
        """Load the file and speak a word with every voice it names: a voice espeak-ng
        does not have is refused at push time, not at the first call."""
        runtime = cls.load(path, options=options)
        for name in runtime.voices.voices:
            try:
                runtime.speak("test", name, 1.0)
            except RuntimeFailure:
                raise UnsupportedArtifact(
                    f"voice {name!r}: espeak-ng has no voice "
                    f"{runtime.voices.voices[name]!r} on this server"
                ) from None
        details = {"voices": sorted(runtime.voices.voices), "engine": ENGINE}
        return ArtifactInfo(cls.framework, runtime.signature, "text-to-speech", details, PARALLEL)

    def _run(self, inputs: dict[str, np.ndarray], outputs: Sequence[str]) -> dict[str, np.ndarray]:
        text = texts_of(inputs["text"])[0]
        voice = texts_of(inputs["voice"], "voice")[0]
        speed = float(inputs["speed"].reshape(-1)[0])
        samples, rate = self.speak(text, voice, speed)
        return {
            "audio": samples.reshape(1, -1),
            "sample_rate": np.array([rate], dtype=np.int32),
        }

    def speak(self, text: str, voice: str, speed: float) -> tuple[np.ndarray, int]:
        """Mono 16-bit samples of ``text`` spoken by ``voice`` (an OpenAI name of the
        file; empty: the default), and their sample rate."""
        limits = self.voices
        if len(text) > limits.max_input_chars:
            raise ContextLengthExceeded(
                f"input: {len(text)} characters, this voice model takes "
                f"{limits.max_input_chars} at most",
                details={"param": "input", "max_input_chars": limits.max_input_chars},
            )
        if "\x00" in text:
            raise InvalidInput("input may not contain NUL characters", details={"param": "input"})
        name = voice or limits.default_voice
        if name not in limits.voices:
            raise InvalidInput(
                f"voice: {name!r} is not a voice of this model; it has "
                f"{', '.join(sorted(limits.voices))}",
                details={"param": "voice"},
            )
        if not 0.25 <= speed <= 4.0:
            raise InvalidInput("speed: from 0.25 to 4.0", details={"param": "speed"})
        rate = min(max(round(_WORDS_PER_MINUTE * speed), _RATE_RANGE[0]), _RATE_RANGE[1])
        command = [self._program, "--stdout", "-b", "1", "-v", limits.voices[name], "-s", str(rate)]
        try:
            done = subprocess.run(  # fixed program, no shell, text on stdin
                command,
                input=text.encode("utf-8"),
                capture_output=True,
                timeout=limits.timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise RuntimeFailure(f"espeak-ng took longer than {limits.timeout_s:g} s") from None
        if done.returncode != 0 or len(done.stdout) <= 44:
            raise RuntimeFailure("espeak-ng failed to speak the input")
        return _wav_samples(done.stdout)


def _wav_samples(wav: bytes) -> tuple[np.ndarray, int]:
    """espeak-ng's wav on a pipe: a 44-byte RIFF header whose sizes it could not fill
    in (it cannot seek back), then 16-bit mono samples to the end."""
    if wav[:4] != b"RIFF" or wav[8:12] != b"WAVE" or wav[36:40] != b"data":
        raise RuntimeFailure("espeak-ng wrote no wav")
    rate = int.from_bytes(wav[24:28], "little")
    body = wav[44 : 44 + (len(wav) - 44) // 2 * 2]
    return np.frombuffer(body, dtype="<i2").astype(np.int16), rate
