"""What the OpenAI tests share: the official SDK on a test server (closed after each
test), OpenAI's error shape, and the messages and tool they send."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.integration.server import RunningServer

__all__ = ["CAPITAL", "WEATHER_TOOL", "close_sdks", "openai_error", "openai_sdk"]

CAPITAL = [{"role": "user", "content": "What is the capital of Germany?"}]

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 40}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}

_CLIENTS: list[openai.OpenAI] = []


@pytest.fixture(autouse=True)
def close_sdks() -> Iterator[None]:
    yield
    while _CLIENTS:
        _CLIENTS.pop().close()


def openai_sdk(server: RunningServer, key: str | None = None) -> openai.OpenAI:
    client = openai.OpenAI(
        base_url=f"{server.url}/v1", api_key=key or server.api_key, max_retries=0
    )
    _CLIENTS.append(client)
    return client


def openai_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The OpenAI-shaped error of ``response``, checked to be ``status`` and ``code``."""
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == code
    return error
