"""The page in a real headless chromium against a real collector process: it loads without a
console error, shows the runs (many ranks compactly), the alerts and the charts, picks up a new
alert from the live stream without reloading, and leaves a screenshot for people to look at.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from gradwatch import wire
from tests.helpers.browser import chromium, opened
from tests.helpers.fake_rank import FakeRank
from tests.helpers.live import raise_nan, send_frames
from tests.helpers.processes import CollectorProcess

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

    from tests.helpers.browser import Console

pytestmark = pytest.mark.slow
EVIL = '<img src="/nope" onerror="alert(1)">&amp;'


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as b:
        yield b


def training(run: str, rank: int, steps: int, nan_at: int | None = None) -> list[wire.Frame]:
    """A rank whose loss falls, with throughput and memory; NaN from ``nan_at`` on."""
    r = FakeRank(run, rank)
    frames: list[wire.Frame] = [r.hello()]
    for step in range(1, steps + 1):
        loss = 3.0 * math.exp(-step / 40) + 0.5 + 0.05 * math.sin(step)
        metrics = {
            "grad_norm": 1.0 + 0.3 * math.sin(step / 3),
            "tokens_per_second": 4000.0 + 200 * math.cos(step / 5),
            "rss_bytes": 4e8 + 1e5 * step,
        }
        lr = (1e-3 * min(1.0, step / 20),)
        nan = nan_at is not None and step >= nan_at
        frames.append(r.stats(step, loss=math.nan if nan else loss, lr=lr, metrics=metrics))
    return frames


def test_page_shows_runs_alerts_and_charts_and_follows_new_alerts(
    browser: Browser, tmp_path: Path
) -> None:
    with CollectorProcess(tmp_path) as proc:
        frames = training("page-run", 0, 120, nan_at=100) + training("page-run", 1, 120)
        wide = [FakeRank("wide", k) for k in range(100)]
        frames += [f for r in wide for f in (r.hello(), r.stats(1), r.stats(2))]
        evil = FakeRank(EVIL, 0)  # shown as text, never as markup (an <img> would 404)
        frames += [evil.hello(), evil.stats(1)]
        send_frames(proc.listen, frames)
        first = proc.wait_for_alert("non_finite", run="page-run", rank=0)

        with opened(browser, f"{proc.http}/#run=page-run&rank=0") as (page, console):
            look_at_the_page(page, console, proc, first["id"], tmp_path)


def look_at_the_page(
    page: Page, console: Console, proc: CollectorProcess, first: int, tmp_path: Path
) -> None:
    # the alert the run raised, the live stream, both runs (100 ranks as ranges)
    page.wait_for_selector(f'#alerts tr[data-alert-id="{first}"][data-state="firing"]')
    page.wait_for_selector('#conn[data-state="live"]')
    page.wait_for_selector('.run[data-run="wide"] .ranks.compact')
    assert "live (100): 0-99" in page.inner_text('.run[data-run="wide"]')
    assert page.locator('.run[data-run="page-run"] .rank-cell').count() == 2
    assert EVIL in page.inner_text("#runs") and page.locator("#runs img").count() == 0
    # charts of the chosen rank: loss drawn up to its NaN, the alert marked at its step
    page.wait_for_selector('.chart[data-chart="loss"][data-points]:not([data-points="0"])')
    for chart in ("loss", "grad_norm", "lr", "throughput", "memory"):
        assert page.locator(f'.chart[data-chart="{chart}"] canvas').count() == 1, chart
    assert page.get_attribute('.chart[data-chart="memory"]', "data-metric") == "rss_bytes"
    assert "NaN at step 120" in page.inner_text('.chart[data-chart="loss"] .chart-head')
    for chart in ("loss", "grad_norm", "lr"):
        markers = page.get_attribute(f'.chart[data-chart="{chart}"]', "data-markers")
        assert markers == "non_finite@100", chart
    assert console.answered("/runs/page-run/series?")
    worst = page.inner_text("#worst")
    assert "tok_emb.weight" in worst

    # a new alert arrives through the stream: no reload (the marker survives)
    page.evaluate("window.__sameDocument = true")
    second = raise_nan(proc, "late-run", rank=3)
    row = page.wait_for_selector(f'#alerts tr[data-alert-id="{second["id"]}"]')
    assert row is not None and "late-run" in row.inner_text()
    assert page.evaluate("window.__sameDocument") is True
    page.wait_for_selector('.run[data-run="late-run"]')

    shot = tmp_path / "page.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"\nscreenshot of the page: {shot}")


def test_page_says_what_to_do_when_the_collector_is_empty(browser: Browser, tmp_path: Path) -> None:
    with CollectorProcess(tmp_path) as proc:
        with opened(browser, proc.http) as (page, _):
            page.wait_for_selector("body[data-ready='1']")
            empty = page.wait_for_selector("#empty", state="visible")
            assert empty is not None and "gradwatch demo" in empty.inner_text()
            assert page.locator("#alerts-panel").is_hidden()


def test_docs_page_opens_at_the_rules_section(browser: Browser, tmp_path: Path) -> None:
    with CollectorProcess(tmp_path) as proc:
        with opened(browser, f"{proc.http}/docs/rules.md#trainer_silent") as (page, _):
            heading = page.locator("h2#trainer_silent")
            assert heading.inner_text() == "trainer_silent"
            assert page.evaluate("window.scrollY") > 0  # scrolled to the section
            assert page.evaluate("document.querySelector(':target').id") == "trainer_silent"


def test_page_asks_for_the_api_token_once_and_keeps_it(browser: Browser, tmp_path: Path) -> None:
    token = "page-test-token-0123456789abcdef"
    (tmp_path / "token").write_text(token)
    flags = ("--api-token-file", str(tmp_path / "token"), "--api-token-reads")
    with CollectorProcess(tmp_path, *flags) as proc:
        r = FakeRank("secret-run", 0)
        send_frames(proc.listen, [r.hello(), r.stats(1), r.stats(2, loss=math.nan), r.bye(2)])
        context = browser.new_context()  # one browser profile: its localStorage lasts
        # without the token every read is refused, so the page asks for it (the browser logs
        # each 401; nothing else may go wrong)
        with opened(context, proc.http, expected="status of 401") as (page, _):
            page.wait_for_selector("#token-form", state="visible")
            page.wait_for_selector('#conn[data-state="token"]')
            assert page.locator("#alerts tbody tr").count() == 0
            page.fill("#token-input", token)
            page.click("#token-form button[type=submit]")
            row = page.wait_for_selector('#alerts tr[data-rule="non_finite"]')
            assert row is not None and "secret-run" in row.inner_text()
            page.wait_for_selector('#conn[data-state="live"]')
            page.wait_for_selector('.run[data-run="secret-run"]')
        # the token stays in the browser: a new page reads at once, without a single 401
        with opened(context, proc.http) as (page, console):
            page.wait_for_selector('#alerts tr[data-rule="non_finite"]')
            page.wait_for_selector('.chart[data-chart="loss"][data-points]:not([data-points="0"])')
            assert page.locator("#token-form").is_hidden()
            assert console.answered("/runs/secret-run/series?")
        context.close()
