"""Keys and usage over HTTP, for a server in a subprocess (``RunningServer``) or in
process (``InProcessServer``) alike: both hand out an ``httpx.Client`` with the admin key."""

from __future__ import annotations

import uuid
from typing import Any, Protocol

import httpx

__all__ = ["Served", "as_key", "bearer", "limited_key", "make_key", "push_secret_model", "usage"]


class Served(Protocol):
    def client(self, **kwargs: Any) -> httpx.Client: ...


def bearer(key: object) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def push_secret_model(server: Served, skops_bytes: bytes) -> None:
    """``secret-model`` (iris, aliased production): a model that only keys allowed
    every model, or this one, may see."""
    with server.client() as http:
        pushed = http.post(
            "/api/v1/models/secret-model/versions",
            params={"filename": "iris.skops", "alias": "production"},
            content=skops_bytes,
        )
    assert pushed.status_code == 201, pushed.text


def make_key(server: Served, **spec: object) -> dict[str, object]:
    """A key made by the admin (named "test" unless ``spec`` names it): the answer."""
    with server.client() as http:
        response = http.post("/api/v1/keys", json={"name": "test", **spec})
    assert response.status_code == 201, response.text
    created: dict[str, object] = response.json()
    return created


def as_key(server: Served, key: object) -> httpx.Client:
    """A client of ``server`` that calls with ``key``."""
    return server.client(headers=bearer(key))


def usage(server: Served, caller: str, **params: str) -> list[dict[str, Any]]:
    """The usage rows ``caller`` sees for ``params``."""
    with server.client(headers=bearer(caller)) as http:
        response = http.get("/api/v1/usage", params=params)
    assert response.status_code == 200, response.text
    rows: list[dict[str, Any]] = response.json()["rows"]
    return rows


def limited_key(server: Served, admin_key: str, **limits: Any) -> tuple[str, str]:
    """A consumer key with these limits, made with ``admin_key``: (its id, its secret)."""
    spec = {"name": f"it-{uuid.uuid4().hex[:8]}", "role": "consumer", "limits": limits}
    with server.client(headers=bearer(admin_key)) as http:
        response = http.post("/api/v1/keys", json=spec)
    assert response.status_code == 201, response.text
    body = response.json()
    return body["id"], body["key"]
