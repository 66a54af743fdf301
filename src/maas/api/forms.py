"""``multipart/form-data`` uploads: the checks every form route needs, written once.

The audio routes (one file and OpenAI's fields) and image classification (many files)
read forms; both need the same refusals: 415 for a body that is not a form, 400 for one
that does not parse (python-multipart's refusal, as Starlette reports it), and the
missing extra named when python-multipart is absent. The form's temporary files are
closed when the block ends.
"""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request

from maas.errors import InvalidRequest, MissingExtra, UnsupportedMediaType

__all__ = ["multipart_form"]


@asynccontextmanager
async def multipart_form(
    request: Request, *, expected: str, extra: tuple[str, str], max_files: int, max_fields: int
) -> AsyncIterator[FormData]:
    """The request's form while the block runs; ``expected`` says what the route wants
    (for the 415), ``extra`` is (what needs it, the extra) for ``MissingExtra``."""
    if importlib.util.find_spec("python_multipart") is None:
        raise MissingExtra(*extra)
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != "multipart/form-data":
        raise UnsupportedMediaType(f"send {expected} as multipart/form-data")
    try:
        form = await request.form(max_files=max_files, max_fields=max_fields)
    except (HTTPException, MultiPartException) as exc:
        detail = exc.detail if isinstance(exc, HTTPException) else exc.message
        raise InvalidRequest(f"the form cannot be read: {detail}") from None
    try:
        yield form
    finally:
        await form.close()
