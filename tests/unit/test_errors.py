"""The error hierarchy is public API: codes unique, documented, drawn in the docstring."""

from __future__ import annotations

import inspect
from pathlib import Path

import maas.errors as errors

DOCS = Path(__file__).parents[2] / "docs" / "errors.md"


def _error_classes() -> list[type[errors.MaasError]]:
    return [
        obj
        for obj in vars(errors).values()
        if inspect.isclass(obj) and issubclass(obj, errors.MaasError)
    ]


def test_codes_are_unique_and_registered() -> None:
    classes = _error_classes()
    codes = [cls.code for cls in classes]
    assert len(codes) == len(set(codes))
    for cls in classes:
        assert errors.error_class_for(cls.code) is cls


def test_every_class_is_drawn_in_the_module_docstring() -> None:
    doc = errors.__doc__ or ""
    for cls in _error_classes():
        assert cls.__name__ in doc, cls.__name__


def test_every_code_is_documented_with_its_status() -> None:
    text = DOCS.read_text()
    for cls in _error_classes():
        assert f"| `{cls.code}` | {int(cls.status)} |" in text, cls.code


def test_unknown_code_falls_back_to_the_base() -> None:
    assert errors.error_class_for("from_a_newer_server") is errors.MaasError


def test_capacity_errors_carry_retry_after() -> None:
    error = errors.Overloaded(retry_after=2.5)
    assert error.retry_after == 2.5 and error.status == 503 and error.message
