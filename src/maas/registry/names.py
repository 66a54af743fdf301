"""Names of models and aliases: safe in URLs, file paths and log lines."""

from __future__ import annotations

import re

from maas.errors import InvalidName

__all__ = ["RESERVED_ALIASES", "validate_alias", "validate_name"]

_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,127}")
RESERVED_ALIASES = frozenset({"latest"})


def validate_name(kind: str, name: str) -> str:
    """Return ``name`` if it is lowercase letters, digits, ``.``, ``_``, ``-`` (no ``..``)."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name:
        raise InvalidName(
            f"invalid {kind} name {name[:140]!r}: use 1-128 lowercase letters, digits, "
            "'.', '_' or '-', starting with a letter or digit, without '..'",
            details={"kind": kind},
        )
    return name


def validate_alias(alias: str) -> str:
    """Aliases follow the name rule, may not be all digits (a version number) nor reserved."""
    validate_name("alias", alias)
    if alias.isdigit():
        raise InvalidName(f"alias {alias!r} would read as a version number; include a letter")
    if alias in RESERVED_ALIASES:
        raise InvalidName(f"alias {alias!r} is reserved")
    return alias
