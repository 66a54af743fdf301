"""What the numbers and times a caller sends must stay within, and the one way text
becomes such a number.

``str.isdigit()`` is true for ``"²"``, which ``int()`` refuses; ``int()`` refuses text
past 4300 digits; the database refuses integers past its column type; and an aware
datetime near year 1 or 9999 has no UTC equivalent. Each of these was a 500; here
they are bounds that schemas state (a 400 with the field) and a parser that answers
``None`` for anything else.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, Field

__all__ = [
    "MAX_SEED",
    "MAX_SEQ",
    "MAX_VERSION",
    "Seed",
    "UtcDatetime",
    "VersionNumber",
    "json_problem",
    "parse_digits",
    "text_problem",
    "to_utc",
]

#: Version numbers are 32-bit ``INTEGER`` columns (on PostgreSQL too).
MAX_VERSION = 2**31 - 1
#: So are the sequence numbers of a job's events.
MAX_SEQ = 2**31 - 1
#: numpy's and scikit-learn's ``random_state`` take 0 .. 2**32 - 1.
MAX_SEED = 2**32 - 1

VersionNumber = Annotated[int, Field(ge=1, le=MAX_VERSION)]
Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]


def parse_digits(text: str, maximum: int) -> int | None:
    """``text`` as an int when it is ASCII digits worth at most ``maximum``, else None.

    A longer number is refused by its length, before ``int()`` would build it.
    """
    if not (text.isascii() and text.isdigit()):
        return None
    digits = text.lstrip("0") or "0"
    if len(digits) > len(str(maximum)):
        return None
    value = int(digits)
    return value if value <= maximum else None


#: The integers orjson writes; JSON from a YAML spec can hold larger ones.
_JSON_INTS = range(-(2**63), 2**64)


def text_problem(text: str) -> str | None:
    """Why ``text`` cannot be stored, or None: PostgreSQL refuses NUL in text and JSON,
    and a lone surrogate (``"\\ud800"``, which stdlib ``json`` reads) is not UTF-8."""
    if "\x00" in text:
        return "text holds a NUL character"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "text holds a lone surrogate, which is not Unicode"
    return None


def json_problem(value: object) -> str | None:
    """Why ``value`` is not JSON that every database of maas stores, or None.

    JSON values only (YAML's bytes, dates and sets are not; object keys are text),
    finite numbers, integers of at most 64 bits, text as ``text_problem`` allows.
    The answer names where: ``params.C: …``.
    """
    stack: list[tuple[str, object]] = [("", value)]
    while stack:
        where, item = stack.pop()
        problem = _scalar_problem(item)
        if isinstance(item, list | tuple):
            stack.extend((f"{where}[{i}]", child) for i, child in enumerate(item))
        elif isinstance(item, dict):
            for key, child in item.items():
                if not isinstance(key, str) or text_problem(key):
                    problem = f"the key {repr(key)[:40]} is not plain text"
                    break
                stack.append((f"{where}.{key}" if where else key, child))
        if problem is not None:
            return f"{where or 'value'}: {problem}"
    return None


def _scalar_problem(item: object) -> str | None:
    if item is None or isinstance(item, bool | list | tuple | dict):
        return None
    if isinstance(item, int):
        return None if item in _JSON_INTS else "the integer is out of 64-bit range"
    if isinstance(item, float):
        return None if math.isfinite(item) else f"{item} is not a finite number"
    if isinstance(item, str):
        return text_problem(item)
    return f"a {type(item).__name__} value is not JSON"


def to_utc(moment: datetime) -> datetime:
    """The same instant as an aware UTC datetime; a naive one is taken as UTC."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except (OverflowError, ValueError):  # 0001-01-01T00:00+01:00 is in year 0
        raise ValueError("the time is out of range once converted to UTC") from None


#: A time a caller sends (``since``, ``until``): normalised to aware UTC, so a naive and
#: an aware one compare, and one without a UTC equivalent is a 400, not a 500.
UtcDatetime = Annotated[datetime, AfterValidator(to_utc)]
