"""FastAPI dependencies: the services of the app.

``get_services`` is a placeholder that ``create_app(services)`` binds through
FastAPI's ``dependency_overrides``: the services are handed to the app by whoever
opened them (``maas serve``, a test), never looked up through the ASGI scope.
"""

from __future__ import annotations

from maas.registry.refs import parse_selector as _parse_selector
from maas.services import Services

__all__ = ["get_services", "parse_selector"]


def get_services() -> Services:
    raise RuntimeError("no services bound: build the app with create_app(services)")


def parse_selector(version: str | None) -> int | str | None:
    """A version path segment (``maas.registry.refs.parse_selector``); None: the default."""
    return None if version is None else _parse_selector(version)
