"""docs/configuration.md names every setting: a setting users cannot find does not exist."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from maas.config import Settings

DOC = Path(__file__).parents[2] / "docs" / "configuration.md"


def _variables() -> list[str]:
    names = []
    for name, field in Settings.model_fields.items():
        section = field.annotation
        if isinstance(section, type) and issubclass(section, BaseModel):
            names += [f"MAAS_{name.upper()}__{sub.upper()}" for sub in section.model_fields]
        else:
            names.append(f"MAAS_{name.upper()}")
    return names


def test_every_setting_is_documented() -> None:
    text = DOC.read_text()
    missing = [name for name in _variables() if f"`{name}`" not in text]
    assert not missing, f"add to docs/configuration.md: {missing}"
