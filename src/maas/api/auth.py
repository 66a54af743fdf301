"""Who is calling: the API key of each request resolved to a ``Principal``.

Raw ASGI, not a FastAPI dependency, because it runs on every inference call: it reads
two headers, computes one HMAC and looks the result up in ``KeyResolver``'s one-second
cache. It puts the principal in ``scope["state"]["principal"]`` (``request.state``) for
the routers (``maas.api.access``) and the rate limiter. A key's text is never logged or
echoed: a failure says only that the key is missing or not valid.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

from maas.api.errors import error_response
from maas.auth.audit import AuditLog
from maas.auth.principal import ANONYMOUS_ADMIN, Principal, Role
from maas.auth.resolver import KeyResolver
from maas.errors import Unauthenticated

__all__ = ["PUBLIC", "Authenticator", "key_from"]

#: The principal of requests to public endpoints (health, the console's and the docs'
#: pages; metrics and the OpenAPI document when public): sees no model.
PUBLIC = Principal(key_id=None, name="public", role=Role.CONSUMER, model_patterns=())

_PUBLIC_PREFIXES = ("/v2/health/", "/console/")
#: Pages that hold no data: the console and Swagger UI call the API with the user's key.
_PAGES = frozenset({"/", "/console", "/docs", "/docs/oauth2-redirect"})
_OPENAPI_PATHS = frozenset({"/openapi.json"})
_MAX_KEY_LENGTH = 512


class Authenticator:
    """Require a valid key (``Authorization: Bearer`` or ``X-API-Key``) off the public paths.

    With ``enabled=False`` (``maas serve --no-auth``) every request is the anonymous admin.
    Health and the pages (``/console``, ``/docs``) are always public; ``/metrics`` (for
    a Prometheus without a key) and ``/openapi.json`` only when the operator says so.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        resolver: KeyResolver,
        audit: AuditLog,
        enabled: bool,
        metrics_public: bool,
        docs_public: bool = True,
    ) -> None:
        self.app = app
        self.enabled = enabled
        self.public_paths = frozenset(
            _PAGES
            | ({"/metrics"} if metrics_public else set())
            | (_OPENAPI_PATHS if docs_public else set())
        )
        self._resolver = resolver
        self._audit = audit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        if not self.enabled:
            state["principal"] = ANONYMOUS_ADMIN
        elif self._is_public(scope["path"]):
            state["principal"] = PUBLIC
        else:
            key = _presented_key(scope)
            principal = await self._resolve(scope, key) if key else None
            if principal is None:
                await self._refuse(scope, receive, send, key)
                return
            state["principal"] = principal
        await self.app(scope, receive, send)

    def _is_public(self, path: str) -> bool:
        return path in self.public_paths or path.startswith(_PUBLIC_PREFIXES)

    async def _resolve(self, scope: Scope, key: str) -> Principal | None:
        if len(key) > _MAX_KEY_LENGTH:
            return None
        return await self._resolver.resolve(key)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, key: str | None) -> None:
        if key is None:
            message = "an API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key'"
        else:
            message = "the API key is not valid (unknown, expired or revoked)"
            client = scope.get("client")
            self._audit.record_auth_failure(client[0] if client else None, "invalid key")
        response = error_response(
            Unauthenticated.status,
            Unauthenticated.code,
            message,
            request_id=scope["state"].get("request_id"),
            headers={"WWW-Authenticate": "Bearer"},
            path=scope["path"],
        )
        await response(scope, receive, send)


#: The headers that may carry a key (ASGI header names are lower-case bytes).
_KEY_HEADERS = (b"authorization", b"x-api-key")


def _presented_key(scope: Scope) -> str | None:
    # Only the two headers that may carry a key are decoded: on a tiny model's call,
    # decoding every header was about 4 % of the server's CPU (py-spy).
    return key_from(
        (name.decode("latin-1"), value.decode("latin-1"))
        for name, value in scope["headers"]
        if name in _KEY_HEADERS
    )


def key_from(headers: Iterable[tuple[str, str]]) -> str | None:
    """The API key of lower-case ``(name, value)`` pairs (HTTP headers, gRPC metadata):
    ``authorization: Bearer <key>`` or ``x-api-key: <key>``."""
    for name, value in headers:
        text = value.strip()
        if name == "authorization":
            scheme, _, credential = text.partition(" ")
            if scheme.lower() == "bearer" and credential.strip():
                return credential.strip()
        elif name == "x-api-key" and text:
            return text
    return None
