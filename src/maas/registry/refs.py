"""Model references as users write them: ``iris``, ``iris:3``, ``iris:production``.

``parse_selector`` is the one reader of a version selector, wherever it comes from: a
path segment, a ``name:selector`` reference, a job spec's ``version``.
"""

from __future__ import annotations

from dataclasses import dataclass

from maas.protocols.bounds import MAX_VERSION, parse_digits
from maas.registry.names import validate_name

__all__ = ["ModelRef", "parse_ref", "parse_selector"]


@dataclass(frozen=True, slots=True)
class ModelRef:
    name: str
    selector: int | str | None = None

    def format(self) -> str:
        return self.name if self.selector is None else f"{self.name}:{self.selector}"


def parse_selector(text: str) -> int | str:
    """ASCII digits select a version number, anything else must be a valid alias name
    (``latest`` included), so a bad selector is refused here rather than failing later
    (``int("²")``) or reaching a lookup.

    A number too large to be a version is still a number, one past ``MAX_VERSION``: the
    registry answers it ``version_not_found`` like any other number that has no
    version, and no integer beyond the database's columns is ever built.
    """
    if text.isascii() and text.isdigit():
        number = parse_digits(text, MAX_VERSION)
        return MAX_VERSION + 1 if number is None else number
    return validate_name("alias", text)


def parse_ref(text: str) -> ModelRef:
    """Split ``name[:selector]``; the selector as ``parse_selector`` reads it."""
    name, _, selector = text.partition(":")
    validate_name("model", name)
    if not selector:
        return ModelRef(name)
    return ModelRef(name, parse_selector(selector))
