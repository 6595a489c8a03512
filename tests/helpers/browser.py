"""A real headless browser for page tests: Debian's chromium driven by playwright (no browser
download), with everything the page says on its console collected."""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page, ViewportSize

FLAGS = (
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
"""Headless as root on a machine with no network beyond its registries: without the
background-networking flags chromium's own connections fail and log errors."""
VIEWPORT: ViewportSize = {"width": 1400, "height": 1000}
TIMEOUT_MS = 30_000
"""Bound on each wait for the page (a broken test's, not a measurement)."""


def chromium_path() -> str:
    """Debian's chromium, or skip (fail under GRADWATCH_REQUIRE_STACK=1) when it or playwright
    is missing."""
    path = shutil.which("chromium")
    reason = "chromium is not installed (run deploy/install-debian-packages.sh)"
    if path is not None:
        if importlib.util.find_spec("playwright") is not None:
            return path
        reason = "playwright is not installed (pip install -e '.[dev]')"
    if os.environ.get("GRADWATCH_REQUIRE_STACK") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


@contextmanager
def chromium() -> Iterator[Browser]:
    """A headless chromium, closed afterwards."""
    path = chromium_path()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, headless=True, args=list(FLAGS))
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class Console:
    """What a page reported: console messages, uncaught errors, failed and error responses."""

    messages: list[tuple[str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    responses: list[tuple[int, str]] = field(default_factory=list)

    def watch(self, page: Page) -> Page:
        page.on("console", lambda m: self._console(m.type, m.text))
        page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))
        page.on("requestfailed", lambda r: self._failed(r))
        page.on("response", lambda r: self.responses.append((r.status, r.url)))
        return page

    def _console(self, kind: str, text: str) -> None:
        self.messages.append((kind, text))
        if kind in ("error", "assert"):
            self.errors.append(f"console.{kind}: {text}")

    def _failed(self, request: Any) -> None:
        failure = request.failure or ""
        # the alert stream is cut when the page closes: that is no error of the page
        if "/alerts/stream" not in request.url or "ERR_ABORTED" not in failure:
            self.errors.append(f"request failed: {request.url}: {failure}")

    def answered(self, path: str, status: int = 200) -> bool:
        """Whether some response for a URL containing ``path`` had ``status``."""
        return any(s == status and path in url for s, url in self.responses)


@contextmanager
def opened(
    browser: Browser | BrowserContext, url: str, expected: str = "\0"
) -> Iterator[tuple[Page, Console]]:
    """``url`` in a new page (of a new context for a browser: nothing stored is shared); on
    leaving, the page closes and must have reported no error but those containing ``expected``."""
    console = Console()
    page = console.watch(browser.new_page())
    page.set_viewport_size(VIEWPORT)
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    try:
        yield page, console
    finally:
        page.close()
    unexpected = [e for e in console.errors if expected not in e]
    assert unexpected == [], unexpected
