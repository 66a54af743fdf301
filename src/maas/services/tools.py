"""Tool calls on any chat model that can hold its output to a grammar.

Most small models' chat templates know nothing of tools, so maas does not rely on one:
the functions are described in a system message, and the answer is held by a grammar to
either a tool call, written as one JSON object ``{"name": …, "arguments": {…}}`` whose
arguments follow the function's JSON schema, or (``tool_choice: auto``) free text that
does not start with ``{``. The call therefore always parses; ``ToolCallStream`` turns it
into OpenAI's ``tool_calls``, in a streamed answer too.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator, Sequence
from typing import Any

from maas.protocols.openai import OutputRequest, ToolCall, ToolSpec
from maas.runtimes.generation import ChatMessage, OutputFormat
from maas.serving.generation import TextDelta, TextStream, TokenLogprob

__all__ = ["ToolCallStream", "parse_tool_call", "tool_call_format", "with_tools_prompt"]


def _chosen(output: OutputRequest) -> Sequence[ToolSpec]:
    if output.tool_choice in ("auto", "required"):
        return output.tools
    return [tool for tool in output.tools if tool.name == output.tool_choice]


def with_tools_prompt(messages: Sequence[ChatMessage], output: OutputRequest) -> list[ChatMessage]:
    """The conversation with the functions described in its system message."""
    listing = json.dumps(
        [
            {"name": t.name, "description": t.description, "parameters": t.parameters}
            for t in _chosen(output)
        ],
        ensure_ascii=False,
    )
    call = 'a JSON object {"name": <function name>, "arguments": <arguments object>}'
    if output.tool_choice == "auto":
        rule = f"To call a function, answer with only {call}; otherwise answer normally."
    else:
        rule = f"Answer with only {call} that calls a function."
    described = f"You can call these functions:\n{listing}\n{rule}"
    if messages and messages[0]["role"] == "system":
        first = {"role": "system", "content": f"{messages[0]['content']}\n\n{described}"}
        return [first, *messages[1:]]
    return [{"role": "system", "content": described}, *messages]


def tool_call_format(output: OutputRequest) -> OutputFormat:
    """The grammar's schema: a call of one of the functions, or (auto) text as well."""
    variants: list[dict[str, Any]] = [
        {
            "type": "object",
            "properties": {
                "name": {"const": tool.name},
                "arguments": dict(tool.parameters) or {"type": "object"},
            },
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for tool in _chosen(output)
    ]
    schema = variants[0] if len(variants) == 1 else {"anyOf": variants}
    return OutputFormat(schema, allow_text=output.tool_choice == "auto")


def parse_tool_call(text: str) -> ToolCall | None:
    """The call ``text`` writes, or ``None`` if it is not one (a cut-off answer)."""
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        return None
    arguments = json.dumps(data.get("arguments", {}), ensure_ascii=False)
    return ToolCall(f"call_{secrets.token_hex(12)}", data["name"], arguments)


class ToolCallStream(TextStream):
    """A choice of a request with tools: text passes through as it comes; an answer
    that starts with ``{`` is a tool call, sent whole as ``tool_calls`` when complete
    (finish reason ``tool_calls``). Wraps the choice's stream, wherever it runs."""

    def __init__(self, stream: TextStream) -> None:
        self._stream = stream
        self.prompt_tokens = stream.prompt_tokens

    @property
    def completion_tokens(self) -> int:
        return self._stream.completion_tokens

    @property
    def finish_reason(self) -> str | None:
        return self._stream.finish_reason

    def cancel(self) -> None:
        self._stream.cancel()

    async def __aiter__(self) -> AsyncIterator[TextDelta]:
        held: list[TextDelta] = []  # pieces before the first visible character
        calling: bool | None = None
        async for delta in self._stream:
            if calling is None:
                text = "".join(d.text for d in held) + delta.text
                if text.strip():
                    calling = text.lstrip().startswith("{")
            if calling is None and delta.finish_reason is None:
                held.append(delta)
                continue
            if calling:
                held.append(delta)
                if delta.finish_reason is not None:
                    yield _call_delta(held)
                continue
            for piece in held:
                yield piece
            held = []
            yield delta


def _call_delta(pieces: list[TextDelta]) -> TextDelta:
    text = "".join(piece.text for piece in pieces)
    logprobs: tuple[TokenLogprob, ...] = tuple(lp for piece in pieces for lp in piece.logprobs)
    call = parse_tool_call(text)
    if call is None:  # cut short (max_tokens): the text as it is
        return TextDelta(text, pieces[-1].finish_reason, logprobs)
    return TextDelta("", "tool_calls", logprobs, (call,))
