"""The web console (``/console``) and the offline OpenAPI page (``/docs``).

The console is a static single-page application (plain ES modules, Chart.js vendored
from npm) and a client of the public HTTP APIs, like the CLI: it holds no logic of its
own on the server, only files. Its pages are public because they hold no data; every
call they make carries the key the user pasted, and the server checks it as for any
other client. ``/docs`` is Swagger UI from the same vendored files, so neither page
needs a CDN or any network beyond this server.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.staticfiles import StaticFiles
from starlette.responses import FileResponse, HTMLResponse, RedirectResponse, Response

__all__ = ["CONSOLE_PATH", "STATIC_DIR", "install"]

CONSOLE_PATH = "/console"
STATIC_DIR = Path(__file__).parent / "static"
_STATIC_URL = f"{CONSOLE_PATH}/static"
_SWAGGER = f"{_STATIC_URL}/vendor/swagger-ui"
#: The page's own scripts are ours and local; nothing it loads may come from elsewhere.
_CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'"
)
_HEADERS = {"Content-Security-Policy": _CSP, "X-Content-Type-Options": "nosniff"}


def install(api: FastAPI) -> None:
    """Serve the console's files, ``/`` → ``/console``, and ``/docs`` from local assets.

    ``api`` must be built with ``docs_url=None``: this ``/docs`` replaces FastAPI's,
    whose page loads Swagger UI from a CDN.
    """
    _declare_key_auth(api)
    api.mount(_STATIC_URL, StaticFiles(directory=STATIC_DIR), name="console-static")
    index = STATIC_DIR / "index.html"

    @api.get("/", include_in_schema=False)
    async def root() -> Response:
        return RedirectResponse(CONSOLE_PATH, status_code=307)

    @api.get(CONSOLE_PATH, include_in_schema=False)
    @api.get(CONSOLE_PATH + "/", include_in_schema=False)
    async def console() -> Response:
        return FileResponse(index, headers=_HEADERS | {"Cache-Control": "no-cache"})

    @api.get("/docs", include_in_schema=False)
    async def docs() -> Response:
        page = get_swagger_ui_html(
            openapi_url=api.openapi_url or "/openapi.json",
            title=f"{api.title} API",
            swagger_js_url=f"{_SWAGGER}/swagger-ui-bundle.js",
            swagger_css_url=f"{_SWAGGER}/swagger-ui.css",
            swagger_favicon_url=f"{_SWAGGER}/favicon-32x32.png",
            swagger_ui_parameters={"validatorUrl": None, "persistAuthorization": False},
        )
        return HTMLResponse(_with_key_from_console(bytes(page.body).decode()))


def _declare_key_auth(api: FastAPI) -> None:
    """Name the two ways to send a key in the OpenAPI document, so that Swagger UI shows
    its Authorize box and sends the key with every call it makes."""
    build = api.openapi

    def openapi() -> dict[str, Any]:
        if api.openapi_schema is None:
            schema = build()
            schema.setdefault("components", {})["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer", "description": "An API key."},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            }
            schema["security"] = [{"bearer": []}, {"apiKey": []}]
        return api.openapi_schema  # type: ignore[return-value]  # set by build()

    api.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented override


def _with_key_from_console(html: str) -> str:
    """FastAPI's page inlines its start-up script, which the console's CSP forbids; the
    page is served without that CSP, and a small local script lends Swagger UI the key
    the console holds (session storage), so "Try it out" works once logged in there."""
    script = f'<script src="{_STATIC_URL}/docs-auth.js"></script>'
    return html.replace("</body>", script + "</body>") if "</body>" in html else html + script
