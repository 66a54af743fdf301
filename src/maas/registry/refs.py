"""Model references as users write them: ``iris``, ``iris:3``, ``iris:production``."""

from __future__ import annotations

from dataclasses import dataclass

from maas.registry.names import validate_name

__all__ = ["ModelRef", "parse_ref"]


@dataclass(frozen=True, slots=True)
class ModelRef:
    name: str
    selector: int | str | None = None

    def format(self) -> str:
        return self.name if self.selector is None else f"{self.name}:{self.selector}"


def parse_ref(text: str) -> ModelRef:
    """Split ``name[:selector]``; ASCII digits select a version number, anything else
    must be a valid alias name (``latest`` included), so a bad reference is refused
    here rather than failing later (``int("²")``) or reaching a lookup."""
    name, _, selector = text.partition(":")
    validate_name("model", name)
    if not selector:
        return ModelRef(name)
    if selector.isascii() and selector.isdigit():
        return ModelRef(name, int(selector))
    return ModelRef(name, validate_name("alias", selector))
