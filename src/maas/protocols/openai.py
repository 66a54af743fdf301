"""The OpenAI API as pure data: request schemas and the response and chunk bodies.

Requests are validated with pydantic (they are small; tensors never pass through
here), with OpenAI's own bounds, so a bad field answers 400 with the field named in
``param`` as OpenAI does. Fields the official SDK may send that do not change an answer
(``user``, ``metadata``, ``store`` …) are accepted and ignored. Fields maas does not
implement and that would change an answer (``echo``, ``presence_penalty``,
``frequency_penalty``, ``logit_bias``, ``functions`` …) are refused with a 400 naming
them when set, and accepted at their neutral value (``0``, ``null``, ``false``), which
the SDK and many clients send by default.

Structured output (``response_format``) and tools (``tools``, ``tool_choice``) are
parsed into ``OutputRequest``; a tool call is written into prompts and answers as one
JSON object, ``{"name": …, "arguments": {…}}`` (``tool_call_json``).
Responses are plain dicts, encoded with orjson by the router.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from maas.errors import UnsupportedContent

__all__ = [
    "ChatCompletionRequest",
    "ChatMessageIn",
    "CompletionRequest",
    "EmbeddingRequest",
    "OutputRequest",
    "ToolCall",
    "ToolSpec",
    "chat_chunk",
    "chat_logprobs",
    "chat_response",
    "completion_chunk",
    "completion_logprobs",
    "completion_response",
    "embedding_response",
    "model_card",
    "new_id",
    "tool_call_json",
    "tool_calls_body",
    "usage_body",
]

MAX_CHOICES = 16
MAX_STOPS = 4
#: OpenAI's bounds for ``seed``: a signed 64-bit integer.
SEED_MIN, SEED_MAX = -(2**63), 2**63 - 1
#: Refused when set: each would change the answer, and maas does not implement it.
_UNSUPPORTED = (
    "functions",
    "function_call",
    "echo",
    "suffix",
    "logit_bias",
    "presence_penalty",
    "frequency_penalty",
)
MAX_TOP_LOGPROBS = 20
#: OpenAI's legacy completions take ``logprobs`` 0..5 (the alternatives per token).
MAX_COMPLETION_LOGPROBS = 5
#: What OpenAI reports for a token whose probability is zero (JSON has no -infinity).
LOGPROB_FLOOR = -9999.0


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


class _ImagePart(BaseModel):
    """Parsed only to be refused by name: no chat model maas serves takes images."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    type: Literal["image_url"]
    image_url: Any = None


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A call the model asks the caller to make: ``arguments`` is a JSON object's text."""

    id: str
    name: str
    arguments: str


def tool_call_json(name: str, arguments: Any) -> str:
    """How a tool call reads in prompts and in what the model writes (one format, so the
    model sees its earlier calls as it was asked to write them)."""
    return json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False)


class _FunctionCallIn(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str
    arguments: str = "{}"


class _ToolCallIn(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    id: str = ""
    type: Literal["function"] = "function"
    function: _FunctionCallIn


class ChatMessageIn(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[Annotated[_TextPart | _ImagePart, Field(discriminator="type")]] | None = (
        None
    )
    #: An assistant turn's calls; a ``tool`` turn answers one by its id.
    tool_calls: list[_ToolCallIn] | None = None
    tool_call_id: str | None = None

    @model_validator(mode="after")
    def _text_only(self) -> ChatMessageIn:
        """An image part is a 400 of its own code, not a schema error: the request is
        well formed, the server has no model to see it. (Raised as a ``MaasError``,
        which pydantic lets through unwrapped, so it keeps its code.)"""
        if isinstance(self.content, list) and any(
            isinstance(part, _ImagePart) for part in self.content
        ):
            raise UnsupportedContent(
                "image content parts are not supported: no chat model on this server takes "
                "images; send text parts, or classify the image with an image model "
                "(POST /v2/models/{model}/classify)",
                details={"param": "messages.content", "type": "image_url"},
            )
        return self

    @property
    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content if isinstance(part, _TextPart))

    def as_template_message(self, calls: Mapping[str, str] | None = None) -> dict[str, str]:
        """What a chat template takes; ``developer`` is OpenAI's newer name for system.

        An assistant turn's tool calls are written as the model writes them
        (``tool_call_json``); a tool's answer becomes a user turn naming the tool (from
        ``calls``: tool call id -> name), which every chat template accepts.
        """
        role = "system" if self.role == "developer" else self.role
        if self.role == "assistant" and self.tool_calls:
            written = [
                tool_call_json(call.function.name, _arguments(call.function.arguments))
                for call in self.tool_calls
            ]
            return {"role": "assistant", "content": "\n".join([self.text, *written]).strip()}
        if self.role == "tool":
            name = (calls or {}).get(self.tool_call_id or "", "the tool")
            return {"role": "user", "content": f"Result of {name}: {self.text}"}
        return {"role": role, "content": self.text}


def _arguments(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


class _JsonSchemaIn(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    name: str = Field("response", max_length=64)
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    type: Literal["text", "json_object", "json_schema"]
    json_schema: _JsonSchemaIn | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("json_schema is required when type is 'json_schema'")
        return self


class _FunctionIn(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=dict)


class _ToolIn(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    type: Literal["function"]
    function: _FunctionIn


class _NamedFunction(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str


class _NamedToolChoice(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    type: Literal["function"]
    function: _NamedFunction


@dataclass(frozen=True, slots=True)
class ToolSpec:
    name: str
    description: str
    parameters: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class OutputRequest:
    """What the caller asked the output to be, beyond text.

    ``json_schema``: the answer is JSON valid against it (``{}``: any JSON object).
    ``tools``: the model may (``tool_choice`` ``auto``) or must (``required``, or one
    function by name) answer with a tool call instead of text.
    """

    json_schema: Mapping[str, Any] | None = None
    tools: Sequence[ToolSpec] = field(default_factory=tuple)
    tool_choice: str = "auto"  # auto | required | the name of the one function to call


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessageIn] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    response_format: ResponseFormat | None = None
    tools: list[_ToolIn] | None = Field(None, max_length=128)
    tool_choice: Literal["none", "auto", "required"] | _NamedToolChoice | None = None
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)

    @model_validator(mode="after")
    def _consistent(self) -> ChatCompletionRequest:
        if self.top_logprobs and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
        names = [tool.function.name for tool in self.tools or ()]
        choice = self.tool_choice
        if isinstance(choice, _NamedToolChoice) and choice.function.name not in names:
            raise ValueError(f"tool_choice names {choice.function.name!r}, which is not in tools")
        if choice == "required" and not names:
            raise ValueError("tool_choice 'required' needs tools")
        structured = self.response_format is not None and self.response_format.type != "text"
        if structured and names and choice != "none":
            raise ValueError("response_format cannot be combined with tools")
        return self

    @property
    def template_messages(self) -> list[dict[str, str]]:
        """The conversation as a chat template takes it (tool turns written as text)."""
        calls = {
            call.id: call.function.name
            for message in self.messages
            for call in message.tool_calls or ()
        }
        return [message.as_template_message(calls) for message in self.messages]

    @property
    def output(self) -> OutputRequest | None:
        """The structured output asked for; ``None``: free text."""
        tools = tuple(
            ToolSpec(t.function.name, t.function.description, t.function.parameters)
            for t in self.tools or ()
        )
        choice = self.tool_choice
        if tools and choice != "none":
            if isinstance(choice, _NamedToolChoice):
                return OutputRequest(tools=tools, tool_choice=choice.function.name)
            return OutputRequest(tools=tools, tool_choice=choice or "auto")
        response = self.response_format
        if response is None or response.type == "text":
            return None
        if response.type == "json_object":
            return OutputRequest(json_schema={})
        assert response.json_schema is not None
        return OutputRequest(json_schema=response.json_schema.schema_ or {"type": "object"})

    @property
    def token_limit(self) -> int | None:
        """``max_completion_tokens`` (the newer name) wins over ``max_tokens``."""
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(_Sampling):
    prompt: str | list[str] = Field(min_length=1)
    max_tokens: int | None = Field(16, ge=1)  # OpenAI's default for completions
    #: Legacy: the alternatives to report per token (0: the chosen token's only).
    logprobs: int | None = Field(None, ge=0, le=MAX_COMPLETION_LOGPROBS)

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


class LoggedToken(Protocol):
    """A generated token with its log-probability and the likeliest alternatives."""

    @property
    def token(self) -> str: ...
    @property
    def logprob(self) -> float: ...
    @property
    def top(self) -> Sequence[tuple[str, float]]: ...


def _floor(value: float) -> float:
    return max(value, LOGPROB_FLOOR)


def _token_entry(token: str, logprob: float) -> dict[str, Any]:
    return {"token": token, "logprob": _floor(logprob), "bytes": list(token.encode())}


def chat_logprobs(tokens: Sequence[LoggedToken]) -> dict[str, Any]:
    """The ``logprobs`` of a chat choice (or chunk): one entry per token."""
    return {
        "content": [
            _token_entry(t.token, t.logprob)
            | {"top_logprobs": [_token_entry(alt, value) for alt, value in t.top]}
            for t in tokens
        ],
        "refusal": None,
    }


def completion_logprobs(tokens: Sequence[LoggedToken], offset: int = 0) -> dict[str, Any]:
    """The legacy completions ``logprobs``: parallel lists, offsets into the text."""
    offsets, position = [], offset
    for t in tokens:
        offsets.append(position)
        position += len(t.token)
    return {
        "tokens": [t.token for t in tokens],
        "token_logprobs": [_floor(t.logprob) for t in tokens],
        "top_logprobs": [{alt: _floor(value) for alt, value in t.top} for t in tokens],
        "text_offset": offsets,
    }


def tool_calls_body(calls: Sequence[ToolCall], *, indexed: bool = False) -> list[dict[str, Any]]:
    """OpenAI's ``tool_calls``; a streamed delta numbers them (``index``)."""
    return [
        ({"index": index} if indexed else {})
        | {
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": call.arguments},
        }
        for index, call in enumerate(calls)
    ]


def chat_response(
    id_: str,
    model: str,
    choices: list[tuple[str, str]],
    usage: dict[str, int],
    *,
    tool_calls: Sequence[Sequence[ToolCall]] | None = None,
    logprobs: Sequence[dict[str, Any] | None] | None = None,
) -> dict[str, Any]:
    """``choices``: (text, finish_reason) per choice, in index order; ``tool_calls`` and
    ``logprobs``: per choice too, where asked for. A choice with tool calls has no text."""
    body = []
    for index, (text, finish) in enumerate(choices):
        calls = tool_calls[index] if tool_calls else ()
        message: dict[str, Any] = {"role": "assistant", "content": None if calls else text}
        if calls:
            message["tool_calls"] = tool_calls_body(calls)
        body.append(
            {
                "index": index,
                "message": message,
                "finish_reason": finish,
                "logprobs": logprobs[index] if logprobs else None,
            }
        )
    return {
        "id": id_,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": body,
        "usage": usage,
    }


def chat_chunk(
    id_: str,
    model: str,
    created: int,
    index: int,
    delta: dict[str, Any],
    finish_reason: str | None,
    *,
    with_usage_field: bool,
    logprobs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    chunk: dict[str, Any] = {
        "id": id_,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [
            {"index": index, "delta": delta, "finish_reason": finish_reason, "logprobs": logprobs}
        ],
    }
    if with_usage_field:  # OpenAI sends "usage": null on every chunk but the last
        chunk["usage"] = None
    return chunk


def completion_response(
    id_: str,
    model: str,
    choices: list[tuple[str, str]],
    usage: dict[str, int],
    *,
    logprobs: Sequence[dict[str, Any] | None] | None = None,
) -> dict[str, Any]:
    return {
        "id": id_,
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": index,
                "text": text,
                "finish_reason": finish,
                "logprobs": logprobs[index] if logprobs else None,
            }
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
    logprobs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    chunk: dict[str, Any] = {
        "id": id_,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": [
            {"index": index, "text": text, "finish_reason": finish_reason, "logprobs": logprobs}
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
