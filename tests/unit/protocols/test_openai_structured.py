"""OpenAI requests for structured output, tools and logprobs, parsed to maas's terms;
tool calls written into prompts and read back from answers."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from maas.protocols import openai as oa
from maas.services.tools import parse_tool_call, tool_call_format, with_tools_prompt

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
CLOCK = {"type": "function", "function": {"name": "get_time"}}
HELLO = [{"role": "user", "content": "hi"}]


def _chat(**fields: object) -> oa.ChatCompletionRequest:
    return oa.ChatCompletionRequest.model_validate({"model": "m", "messages": HELLO, **fields})


def test_response_formats_become_output_requests() -> None:
    assert _chat().output is None
    assert _chat(response_format={"type": "text"}).output is None
    assert _chat(response_format={"type": "json_object"}).output == oa.OutputRequest({})
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema, "strict": True}}
    assert _chat(response_format=fmt).output == oa.OutputRequest(schema)
    with pytest.raises(ValidationError, match="json_schema is required"):
        _chat(response_format={"type": "json_schema"})


def test_tools_and_tool_choice() -> None:
    auto = _chat(tools=[WEATHER, CLOCK]).output
    assert auto is not None and auto.tool_choice == "auto"
    assert [t.name for t in auto.tools] == ["get_weather", "get_time"]
    choice = {"type": "function", "function": {"name": "get_time"}}
    named = _chat(tools=[WEATHER, CLOCK], tool_choice=choice).output
    assert named is not None and named.tool_choice == "get_time"
    assert _chat(tools=[WEATHER], tool_choice="none").output is None
    for bad, message in (
        ({"tool_choice": "required"}, "needs tools"),
        ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "x"}}},
         "not in tools"),
        ({"tools": [WEATHER], "response_format": {"type": "json_object"}}, "cannot be combined"),
        ({"top_logprobs": 2}, "needs logprobs"),
        ({"logprobs": True, "top_logprobs": 21}, "less than or equal"),
        ({"functions": [{"name": "f"}]}, "'functions' is not supported"),
    ):  # fmt: skip
        with pytest.raises(ValidationError, match=message):
            _chat(**bad)


def test_tool_turns_are_written_as_the_model_writes_calls() -> None:
    request = _chat(
        messages=[
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        ]
    )  # fmt: skip
    user, assistant, tool = request.template_messages
    assert json.loads(assistant["content"]) == {
        "name": "get_weather",
        "arguments": {"city": "Paris"},
    }
    assert tool == {"role": "user", "content": "Result of get_weather: sunny"}
    assert user["role"] == "user"


def test_tool_call_grammar_schema_and_parsing() -> None:
    output = _chat(tools=[WEATHER, CLOCK], tool_choice="required").output
    assert output is not None
    fmt = tool_call_format(output)
    assert not fmt.allow_text
    names = [v["properties"]["name"]["const"] for v in fmt.json_schema["anyOf"]]
    assert names == ["get_weather", "get_time"]
    auto = tool_call_format(_chat(tools=[WEATHER]).output)  # type: ignore[arg-type]
    assert auto.allow_text and auto.json_schema["properties"]["name"]["const"] == "get_weather"
    call = parse_tool_call('{"name": "get_weather", "arguments": {"city": "Oslo"}}')
    assert call is not None and call.name == "get_weather" and call.id.startswith("call_")
    assert json.loads(call.arguments) == {"city": "Oslo"}
    assert parse_tool_call('{"name": "get_weather", "argu') is None
    assert parse_tool_call("Hello") is None


def test_the_functions_are_described_in_the_system_message() -> None:
    output = _chat(tools=[WEATHER]).output
    assert output is not None
    plain = with_tools_prompt(HELLO, output)
    assert plain[0]["role"] == "system" and "get_weather" in plain[0]["content"]
    system = [{"role": "system", "content": "Be brief."}, *HELLO]
    merged = with_tools_prompt(system, output)
    assert len(merged) == 2 and merged[0]["content"].startswith("Be brief.")


def test_logprob_bodies_have_openai_shape() -> None:
    class Token:
        def __init__(self, token: str, logprob: float, top: list[tuple[str, float]]) -> None:
            self.token, self.logprob, self.top = token, logprob, top

    tokens = [Token("Par", -0.1, [("Par", -0.1), ("Lon", -3.0)]), Token("is", float("-inf"), [])]
    chat = oa.chat_logprobs(tokens)
    assert chat["content"][0] == {
        "token": "Par", "logprob": -0.1, "bytes": [80, 97, 114],
        "top_logprobs": [{"token": "Par", "logprob": -0.1, "bytes": [80, 97, 114]},
                         {"token": "Lon", "logprob": -3.0, "bytes": [76, 111, 110]}],
    }  # fmt: skip
    assert chat["content"][1]["logprob"] == oa.LOGPROB_FLOOR  # JSON has no -infinity
    legacy = oa.completion_logprobs(tokens)
    assert legacy["tokens"] == ["Par", "is"] and legacy["text_offset"] == [0, 3]
    assert legacy["top_logprobs"][0] == {"Par": -0.1, "Lon": -3.0}
