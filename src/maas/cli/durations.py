"""Durations as people type them on the command line: ``90s``, ``30m``, ``12h``, ``2d``."""

from __future__ import annotations

from datetime import timedelta

from maas.errors import InvalidInput

__all__ = ["parse_duration"]

_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(text: str, option: str, *, units: str = "smhdw") -> timedelta:
    """``text`` as a whole number followed by one of ``units``; ``InvalidInput`` naming
    ``option`` otherwise."""
    amount, unit = text[:-1], text[-1:]
    if unit not in units or unit not in _UNITS or not amount.isdigit():
        raise InvalidInput(f"{option} takes a number and one of {', '.join(units)}: {text!r}")
    return timedelta(**{_UNITS[unit]: int(amount)})
