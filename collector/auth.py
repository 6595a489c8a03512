"""Bearer-token authentication of the HTTP API (``--api-token-file``, ``--api-token-reads``).

An ASGI middleware, so every route is covered, those added later included: with a token set,
every mutating call (POST, PUT, PATCH, DELETE) needs ``Authorization: Bearer TOKEN``, and with
``reads`` every other call too, except :data:`OPEN_PATHS` (scrapes, probes, the API's own
documentation, the page) and :data:`OPEN_PREFIXES` (the page's files, the docs pages). Routes
read ``request.state.authenticated`` to decide what to show (session ids only to callers with
the token). The OpenAPI schema declares the scheme where it applies.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

OPEN_PATHS = frozenset(
    {"/metrics", "/healthz", "/readyz", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}
    | {"/"}
)
"""Never need the token: Prometheus, probes, the API documentation and the page."""
OPEN_PREFIXES = ("/static/", "/docs/")
"""Nor do the page's files and the docs pages that notifications link to (pages.py): nothing
secret, and the page (``/``, in :data:`OPEN_PATHS`) must load to ask for the token."""
MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def needs_token(method: str, path: str, reads: bool) -> bool:
    """Whether a call needs the token (when one is set)."""
    if method in MUTATING:
        return True
    return reads and path not in OPEN_PATHS and not path.startswith(OPEN_PREFIXES)


def bearer(scope: Scope) -> str | None:
    """The token of an ``Authorization: Bearer ...`` header, if any."""
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() == "bearer" else None
    return None


class TokenAuth:
    """Refuses calls that need the token and lack it with 401; marks the others."""

    def __init__(self, app: ASGIApp, token: str | None, reads: bool = False) -> None:
        self.app, self.token, self.reads = app, token, reads

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = bearer(scope)
        ok = (
            self.token is not None
            and given is not None
            and hmac.compare_digest(given.encode(), self.token.encode())
        )
        scope.setdefault("state", {})["authenticated"] = ok
        needed = self.token is not None and needs_token(scope["method"], scope["path"], self.reads)
        if needed and not ok:
            detail = "a bearer token is required" if given is None else "wrong bearer token"
            body = json.dumps({"detail": detail}).encode()
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"www-authenticate", b'Bearer realm="gradwatch"'),
            ]
            await send({"type": "http.response.start", "status": 401, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)


def protect(app: FastAPI, token: str | None, reads: bool) -> None:
    """Install :class:`TokenAuth` on ``app`` and declare it in its OpenAPI schema."""
    app.add_middleware(TokenAuth, token=token, reads=reads)
    if token is None:
        return
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
            schemes["bearer"] = {"type": "http", "scheme": "bearer"}
            for path, methods in schema.get("paths", {}).items():
                for method, op in methods.items():
                    if needs_token(method.upper(), path, reads):
                        op["security"] = [{"bearer": []}]
                        op.setdefault("responses", {})["401"] = {
                            "description": "Missing or wrong bearer token",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Problem"}
                                }
                            },
                        }
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
