"""Who is calling: the API key of each request resolved to a ``Principal``.

Raw ASGI, not a FastAPI dependency, because it runs on every inference call: it reads
two headers, computes one HMAC and looks the result up in ``KeyResolver``'s one-second
cache. It puts the principal in ``scope["state"]["principal"]`` (``request.state``) for
the routers (``maas.api.access``) and the rate limiter. A key's text is never logged or
echoed: a failure says only that the key is missing or not valid.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from maas.api.errors import error_response
from maas.auth.audit import AuditLog
from maas.auth.principal import ANONYMOUS_ADMIN, Principal, Role
from maas.auth.resolver import KeyResolver
from maas.errors import Unauthenticated

__all__ = ["PUBLIC", "Authenticator"]

#: The principal of requests to public endpoints (health; metrics and docs when public):
#: sees no model.
PUBLIC = Principal(key_id=None, name="public", role=Role.CONSUMER, model_patterns=())

_PUBLIC_PREFIXES = ("/v2/health/",)
_DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/openapi.json"})
_MAX_KEY_LENGTH = 512


class Authenticator:
    """Require a valid key (``Authorization: Bearer`` or ``X-API-Key``) off the public paths.

    With ``enabled=False`` (``maas serve --no-auth``) every request is the anonymous admin.
    Health is always public; ``/metrics`` (for a Prometheus without a key) and the
    OpenAPI page only when the operator says so.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        resolver: KeyResolver,
        audit: AuditLog,
        enabled: bool,
        metrics_public: bool,
        docs_public: bool = False,
    ) -> None:
        self.app = app
        self.enabled = enabled
        self.public_paths = frozenset(
            ({"/metrics"} if metrics_public else set()) | (_DOCS_PATHS if docs_public else set())
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


def _presented_key(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        text: str = value.decode("latin-1").strip()
        if name == b"authorization":
            scheme, _, credential = text.partition(" ")
            if scheme.lower() == "bearer" and credential.strip():
                return credential.strip()
        elif name == b"x-api-key" and text:
            return text
    return None
