"""The OpenAI API as pure data: request schemas and the response and chunk bodies.

Requests are validated with pydantic (they are small; tensors never pass through
here), with OpenAI's own bounds, so a bad field answers 400 with the field named in
``param`` as OpenAI does. Fields the official SDK may send that do not change an answer
(``user``, ``metadata``, ``store`` …) are accepted and ignored. Fields maas does not
implement and that would change an answer (``logprobs``, ``tools``, ``echo``,
``presence_penalty``, ``frequency_penalty``, ``logit_bias`` …) are refused with a 400
naming them when set, and accepted at their neutral value (``0``, ``null``, ``false``),
which the SDK and many clients send by default.
Responses are plain dicts, encoded with orjson by the router.
"""

from __future__ import annotations

import base64
import secrets
import time
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "ChatCompletionRequest",
    "ChatMessageIn",
    "CompletionRequest",
    "EmbeddingRequest",
    "chat_chunk",
    "chat_response",
    "completion_chunk",
    "completion_response",
    "embedding_response",
    "model_card",
    "new_id",
    "usage_body",
]

MAX_CHOICES = 16
MAX_STOPS = 4
#: OpenAI's bounds for ``seed``: a signed 64-bit integer.
SEED_MIN, SEED_MAX = -(2**63), 2**63 - 1
#: Refused when set: each would change the answer, and maas does not implement it.
_UNSUPPORTED = (
    "logprobs",
    "top_logprobs",
    "tools",
    "functions",
    "echo",
    "suffix",
    "logit_bias",
    "presence_penalty",
    "frequency_penalty",
    "response_format",
)


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    model: str = Field(min_length=1, max_length=300)


class _Unsupported(BaseModel):
    """Fields maas refuses rather than ignores: ignoring them would change the answer."""

    @model_validator(mode="before")
    @classmethod
    def _refuse_unsupported(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name in _UNSUPPORTED:
                value = data.get(name)
                if name == "response_format" and value in ({"type": "text"}, None):
                    continue  # the default: plain text
                if value not in (None, False, [], {}, 0, ""):
                    raise ValueError(f"'{name}' is not supported by this server")
        return data


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    include_usage: bool = False


class _Sampling(_Request, _Unsupported):
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    n: int = Field(1, ge=1, le=MAX_CHOICES)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=SEED_MIN, le=SEED_MAX)
    stream: bool = False
    stream_options: StreamOptions | None = None
    #: vLLM's extension: keep generating past end-of-sequence up to ``max_tokens``.
    ignore_eos: bool = False

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and len(value) > MAX_STOPS:
            raise ValueError(f"at most {MAX_STOPS} stop sequences")
        return value

    @property
    def stops(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        values = [self.stop] if isinstance(self.stop, str) else self.stop
        return tuple(value for value in values if value)

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


class _TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    type: Literal["text"]
    text: str


class ChatMessageIn(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[_TextPart] | None = None

    @property
    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)

    def as_template_message(self) -> dict[str, str]:
        """What a chat template takes; ``developer`` is OpenAI's newer name for system."""
        role = "system" if self.role == "developer" else self.role
        return {"role": role, "content": self.text}


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessageIn] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)

    @property
    def token_limit(self) -> int | None:
        """``max_completion_tokens`` (the newer name) wins over ``max_tokens``."""
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(_Sampling):
    prompt: str | list[str] = Field(min_length=1)
    max_tokens: int | None = Field(16, ge=1)  # OpenAI's default for completions

    @property
    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)

    @property
    def token_limit(self) -> int | None:
        return self.max_tokens


class EmbeddingRequest(_Request):
    input: str | list[str] = Field(min_length=1)
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)

    @field_validator("input")
    @classmethod
    def _non_empty(cls, value: str | list[str]) -> str | list[str]:
        texts = [value] if isinstance(value, str) else value
        if any(not text for text in texts):
            raise ValueError("input must not contain empty strings")
        if len(texts) > 2048:
            raise ValueError("at most 2048 inputs per request")
        return value

    @property
    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


# -- responses ---------------------------------------------------------------------


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


def usage_body(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def model_card(name: str, created: float, owner: str = "maas") -> dict[str, Any]:
    return {"id": name, "object": "model", "created": int(created), "owned_by": owner}


def chat_response(
    id_: str,
    model: str,
    choices: list[tuple[str, str]],
    usage: dict[str, int],
) -> dict[str, Any]:
    """``choices``: (text, finish_reason) per choice, in index order."""
    return {
        "id": id_,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": index,
                "message": {"role": "assistant", "content": text},
                "finish_reason": finish,
                "logprobs": None,
            }
            for index, (text, finish) in enumerate(choices)
        ],
        "usage": usage,
    }


def chat_chunk(
    id_: str,
    model: str,
    created: int,
    index: int,
    delta: dict[str, str],
    finish_reason: str | None,
    *,
    with_usage_field: bool,
) -> dict[str, Any]:
    chunk: dict[str, Any] = {
        "id": id_,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [
            {"index": index, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
        ],
    }
    if with_usage_field:  # OpenAI sends "usage": null on every chunk but the last
        chunk["usage"] = None
    return chunk


def completion_response(
    id_: str, model: str, choices: list[tuple[str, str]], usage: dict[str, int]
) -> dict[str, Any]:
    return {
        "id": id_,
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": index, "text": text, "finish_reason": finish, "logprobs": None}
            for index, (text, finish) in enumerate(choices)
        ],
        "usage": usage,
    }


def completion_chunk(
    id_: str,
    model: str,
    created: int,
    index: int,
    text: str,
    finish_reason: str | None,
    *,
    with_usage_field: bool,
) -> dict[str, Any]:
    chunk: dict[str, Any] = {
        "id": id_,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": [
            {"index": index, "text": text, "finish_reason": finish_reason, "logprobs": None}
        ],
    }
    if with_usage_field:
        chunk["usage"] = None
    return chunk


def embedding_response(
    model: str, vectors: np.ndarray, encoding: str, prompt_tokens: int
) -> dict[str, Any]:
    """float: lists of numbers; base64: each vector's little-endian float32 bytes, which
    is what the official SDK decodes (and asks for by default)."""
    data = []
    for index, vector in enumerate(np.asarray(vectors, dtype="<f4")):
        value: Any = (
            base64.b64encode(vector.tobytes()).decode("ascii")
            if encoding == "base64"
            else vector.tolist()
        )
        data.append({"object": "embedding", "index": index, "embedding": value})
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }
