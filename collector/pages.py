"""What a browser reads: the page at ``/`` (static HTML and JS, no build step) and the project's
docs at ``/docs/<name>.md``, rendered to HTML with an anchor on every heading, so alert
notifications' ``runbook_url`` (``/docs/rules.md#<rule>``) lands on the rule's section.

Both folders ship inside the package: ``static/`` holds the page and its vendored chart
library; ``docs`` is a link to the repository's ``docs/`` folder in a checkout and a copy of it
in a wheel (package data). FastAPI's own ``/docs`` (Swagger UI) is that exact path only and
stays as it is.
"""

from __future__ import annotations

import functools
import html
import mimetypes
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException
from fastapi.responses import FileResponse, HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from markdown_it import MarkdownIt
from markdown_it.renderer import RendererHTML
from markdown_it.token import Token
from markdown_it.utils import EnvType, OptionsDict

HERE = Path(__file__).parent
STATIC = HERE / "static"
DOCS = HERE / "docs"

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "style-src 'self'; object-src 'none'; frame-ancestors 'none'; "
    "base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
"""Sent with the page and the docs: only our own scripts run, nothing is framed."""

_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*$")
_COMMENT = re.compile(r"<!--.*?-->", re.S)
_NOT_SLUG = re.compile(r"[^\w\- ]", re.U)


def slug(text: str) -> str:
    """A heading's anchor as GitHub writes it: lower case, punctuation dropped, spaces to ``-``."""
    return _NOT_SLUG.sub("", text.strip().lower()).replace(" ", "-")


def _heading_text(token: Token | None) -> str:
    if token is None or not token.children:
        return "" if token is None else token.content
    return "".join(c.content for c in token.children if c.type in ("text", "code_inline"))


def _heading_open(
    self: RendererHTML, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType
) -> str:
    seen: dict[str, int] = env.setdefault("slugs", {})
    base = slug(_heading_text(tokens[idx + 1] if idx + 1 < len(tokens) else None))
    n = seen.get(base, 0)
    seen[base] = n + 1
    tokens[idx].attrSet("id", base if n == 0 else f"{base}-{n}")
    return self.renderToken(tokens, idx, options, env)


def _markdown() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    md.add_render_rule("heading_open", _heading_open)
    return md


_MD = _markdown()

_DOC_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · gradwatch</title>
<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">
<link rel="stylesheet" href="/static/docs.css">
</head><body>
<nav><a href="/">gradwatch</a> · docs: {links}</nav>
<main>
{body}</main>
</body></html>
"""


def render_markdown(text: str) -> str:
    """Markdown (CommonMark with tables; raw HTML shown as text, comments dropped) → HTML."""
    return str(_MD.render(_COMMENT.sub("", text), {}))


def doc_names() -> list[str]:
    """The docs pages served, sorted."""
    if not DOCS.is_dir():
        return []
    return sorted(p.name for p in DOCS.iterdir() if p.is_file() and _NAME.match(p.name))


@functools.lru_cache(maxsize=64)
def _rendered(name: str, mtime_ns: int) -> str:
    text = (DOCS / name).read_text(encoding="utf-8")
    first = re.search(r"^#\s+(.+)$", text, re.M)
    title = html.escape(first.group(1).strip() if first else name)
    links = " ".join(
        f'<a href="/docs/{n}">{html.escape(n.removesuffix(".md"))}</a>'
        for n in doc_names()
        if n.endswith(".md")
    )
    return _DOC_PAGE.format(title=title, links=links, body=render_markdown(text))


def doc_response(name: str) -> Response:
    """A docs page: markdown rendered to HTML, other files (images) as they are; 404 else."""
    if not _NAME.match(name) or name not in doc_names():
        raise HTTPException(404, f"no docs page named {name!r}")
    path = DOCS / name
    if name.endswith(".md"):
        body = _rendered(name, path.stat().st_mtime_ns)
        return HTMLResponse(body, headers=SECURITY_HEADERS)
    media = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return FileResponse(path, media_type=media, headers={"X-Content-Type-Options": "nosniff"})


class _Static(StaticFiles):
    """The page's files, revalidated on every load (a 304 when unchanged), so a browser never
    mixes modules of two collector versions."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers["Cache-Control"] = "no-cache"
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response


def add_pages(app: FastAPI) -> None:
    """``/`` (the page), ``/static/...`` and ``/docs/{name}``; none in the OpenAPI schema."""
    app.mount("/static", _Static(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def page() -> Response:
        return FileResponse(STATIC / "index.html", headers=SECURITY_HEADERS)

    @app.get("/docs/{name}", include_in_schema=False)
    def docs_page(name: str) -> Response:
        return doc_response(name)
