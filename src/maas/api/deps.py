"""FastAPI dependencies: the services of the running app."""

from __future__ import annotations

from starlette.requests import Request

from maas.registry.refs import parse_selector as _parse_selector
from maas.services import Services

__all__ = ["get_services", "parse_selector"]


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def parse_selector(version: str | None) -> int | str | None:
    """A version path segment (``maas.registry.refs.parse_selector``); None: the default."""
    return None if version is None else _parse_selector(version)
