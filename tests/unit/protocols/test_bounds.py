"""Bounds of callers' numbers and times, and the one reader of digits in text."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import TypeAdapter, ValidationError

from maas.protocols.bounds import UtcDatetime, json_problem, parse_digits, text_problem


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0", 0),
        ("42", 42),
        ("0042", 42),
        ("100", 100),
        ("101", None),  # past the maximum
        ("9" * 5000, None),  # refused by length, before int() (which stops at 4300 digits)
        ("²", None),  # str.isdigit() is true for it, int() refuses it
        ("\u0661\u0662", None),  # Arabic-Indic digits: digits, not ASCII
        ("-1", None),
        ("+1", None),
        (" 1", None),
        ("1e3", None),
        ("", None),
    ],
)
def test_parse_digits_takes_ascii_digits_up_to_the_maximum(text: str, value: int | None) -> None:
    assert parse_digits(text, 100) == value


_UTC = TypeAdapter(UtcDatetime)


def test_times_become_aware_utc_and_naive_means_utc() -> None:
    naive = _UTC.validate_python("2026-01-02T00:00:00")
    aware = _UTC.validate_python("2026-01-02T02:00:00+02:00")
    assert naive == aware == datetime(2026, 1, 2, tzinfo=UTC)
    assert naive.tzinfo is UTC and aware.tzinfo is UTC
    assert _UTC.validate_python("2026-01-01T00:00:00Z") < naive  # comparable now


@pytest.mark.parametrize("text", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"])
def test_a_time_without_a_utc_equivalent_is_a_validation_error(text: str) -> None:
    with pytest.raises(ValidationError, match="out of range once converted to UTC"):
        _UTC.validate_python(text)
    moment = datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1)))
    with pytest.raises(ValidationError):
        _UTC.validate_python(moment)


@pytest.mark.parametrize(
    "value",
    [
        None,
        {"a": [1, 2.5, True, None, "text", {"b": -(2**63)}]},
        {"big": 2**64 - 1, "unicode": "³ ü 中"},
        [],
    ],
)
def test_plain_json_has_no_problem(value: object) -> None:
    assert json_problem(value) is None


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ({"C": b"\x80\x00\x00"}, "C: a bytes value is not JSON"),
        ({"when": datetime(2026, 1, 1)}, "when: a datetime value is not JSON"),
        ({"s": {1, 2}}, "s: a set value is not JSON"),
        ({"n": float("nan")}, "n: nan is not a finite number"),
        ({"n": [1, float("inf")]}, "n[1]: inf is not a finite number"),
        ({"i": 2**64}, "i: the integer is out of 64-bit range"),
        ({"i": -(2**63) - 1}, "i: the integer is out of 64-bit range"),
        ({"t": "a\x00b"}, "t: text holds a NUL character"),
        ({"t": "\ud800"}, "t: text holds a lone surrogate"),
        ({"p": {1: 2}}, "p: the key 1 is not plain text"),
        ({"p": {"\x00": 2}}, "p: the key '\\x00' is not plain text"),
    ],
)
def test_values_json_cannot_store_are_named_with_their_place(value: object, problem: str) -> None:
    found = json_problem(value)
    assert found is not None and found.startswith(problem), found


def test_text_problem() -> None:
    assert text_problem("plain ü") is None
    assert text_problem("\x00") == "text holds a NUL character"
    assert text_problem("\udfff") is not None
