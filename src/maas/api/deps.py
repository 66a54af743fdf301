"""FastAPI dependencies: the services of the running app."""

from __future__ import annotations

from starlette.requests import Request

from maas.services import Services

__all__ = ["get_services", "parse_selector"]


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def parse_selector(version: str | None) -> int | str | None:
    """A version path segment: digits name a version number, anything else an alias."""
    if version is None:
        return None
    return int(version) if version.isdigit() else version
