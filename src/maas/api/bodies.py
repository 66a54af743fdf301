"""Reading OpenAI-style request bodies: JSON (or form fields) checked by a pydantic
schema, a bad field answered 400 with its name in ``param`` as OpenAI does; and a
missing version or alias answered as OpenAI would, as a missing model."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from maas.errors import AliasNotFound, InvalidRequest, ModelNotFound, VersionNotFound

__all__ = ["body_example", "model_not_found", "parse_json", "validated"]

R = TypeVar("R", bound=BaseModel)


async def parse_json(request: Request, schema: type[R]) -> R:
    """The body as ``schema``; a bad field is a 400 naming it in ``param``."""
    body = await request.body()
    if not body:
        raise InvalidRequest("the request body is empty; send a JSON object")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidRequest("the body must be a JSON object")
    return validated(schema, data)


def validated(schema: type[R], data: Mapping[str, Any]) -> R:
    """``data`` as ``schema``; a bad field is a 400 naming it in ``param``."""
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        param = ".".join(str(part) for part in error.get("loc", ())) or None
        message = str(error.get("msg", "invalid request")).removeprefix("Value error, ")
        raise InvalidRequest(
            f"{param}: {message}" if param else message, details={"param": param}
        ) from None


@contextmanager
def model_not_found() -> Iterator[None]:
    """A missing version or alias is, to an OpenAI client, a missing model."""
    try:
        yield
    except (VersionNotFound, AliasNotFound) as exc:
        raise ModelNotFound(exc.message) from None


def body_example(example: dict[str, Any]) -> dict[str, Any]:
    """OpenAPI ``openapi_extra`` documenting a JSON body the route reads itself."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"type": "object"}, "example": example}},
        }
    }
