"""The page's routes in-process: the page and its files, the docs pages with their anchors (the
runbook links of notifications), the series route, and FastAPI's own /docs left as it was."""

from __future__ import annotations

import dataclasses
import hashlib
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import get_args
from urllib.parse import urlsplit

import pytest
import yaml
from fastapi.testclient import TestClient

from gradwatch.collector.alertmanager import AlertmanagerPusher
from gradwatch.collector.api import create_app
from gradwatch.collector.config import CollectorConfig
from gradwatch.collector.pages import DOCS, STATIC, render_markdown, slug
from gradwatch.collector.rules import CATALOGUE
from gradwatch.collector.series import SERIES, SeriesMetric
from tests.helpers.fake_rank import FakeRank, Harness

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def world() -> Iterator[tuple[Harness, TestClient]]:
    h = Harness()
    for rank in (2, 5):
        r = FakeRank("demo", rank)
        h.send(r.hello())
        for step in range(1, 21):
            h.send(r.stats(step, loss=math.nan if (rank, step) == (5, 20) else 3 - step / 10))
    h.send(FakeRank("demo", 7).hello())  # a live rank that has sent no statistics yet
    with TestClient(create_app(h.core)) as client:
        yield h, client


def test_page_is_served_with_its_files_and_a_strict_policy(
    world: tuple[Harness, TestClient],
) -> None:
    _, client = world
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "unsafe-eval" not in policy
    assert "script-src" not in policy or "unsafe-inline" not in policy.split("script-src")[1]
    linked = re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text)
    assert {"/static/app.js", "/static/vendor/uPlot.iife.min.js"} <= set(linked)
    types = {".js": "javascript", ".css": "text/css", ".svg": "image/svg+xml"}
    for path in linked:
        got = client.get(path)
        assert got.status_code == 200, path
        assert types[Path(path).suffix] in got.headers["content-type"], path
        assert got.headers["cache-control"] == "no-cache", path


def test_page_modules_import_only_files_that_exist() -> None:
    for script in STATIC.glob("*.js"):
        for target in re.findall(r'from "\./([^"]+)"', script.read_text()):
            assert (STATIC / target).is_file(), f"{script.name} imports missing {target}"


def test_page_vendored_chart_library_matches_its_readme() -> None:
    vendor = STATIC / "vendor"
    readme = (vendor / "README.md").read_text()
    assert (vendor / "LICENSE.uPlot").read_text().startswith("The MIT License")
    rows = re.findall(r"^\| `([^`]+)` \| `[^`]+` \| `([0-9a-f]{64})` \|$", readme, re.M)
    assert {name for name, _ in rows} == {"uPlot.iife.min.js", "uPlot.min.css"}
    for name, digest in rows:
        assert hashlib.sha256((vendor / name).read_bytes()).hexdigest() == digest, name
    version = re.search(r"uplot@([0-9.]+)", readme)
    assert version and f"(v{version.group(1)})" in (vendor / "uPlot.iife.min.js").read_text()[:80]


def test_page_docs_folder_is_the_repository_docs() -> None:
    assert DOCS.resolve() == (ROOT / "docs").resolve()


def test_docs_pages_render_every_doc_as_html(world: tuple[Harness, TestClient]) -> None:
    _, client = world
    names = sorted(p.name for p in (ROOT / "docs").glob("*.md"))
    assert "rules.md" in names
    for name in names:
        got = client.get(f"/docs/{name}")
        assert got.status_code == 200, name
        assert got.headers["content-type"] == "text/html; charset=utf-8"
        assert got.headers["x-content-type-options"] == "nosniff"
        assert "<h1" in got.text and "<p>" in got.text
        assert "<!--" not in got.text and "<script" not in got.text


def test_docs_runbook_links_of_notifications_land_on_their_section(
    world: tuple[Harness, TestClient],
) -> None:
    h, client = world
    pusher = AlertmanagerPusher(CollectorConfig(public_url="http://collector:8000"), h.book)
    [alert] = [a for a in h.book.alerts() if a.rule == "non_finite"]
    url = urlsplit(pusher.payload(alert)["annotations"]["runbook_url"])
    assert (url.path, url.fragment) == ("/docs/rules.md", "non_finite")
    rules = client.get(url.path).text
    for rule in CATALOGUE:
        assert f'<h2 id="{rule}">' in rules, rule
    # Prometheus-side alerts link GRADWATCH_DOCS_URL/stack.md#<alertname in lower case>
    groups = yaml.safe_load((ROOT / "deploy/prometheus/rules/gradwatch.yml").read_text())
    names = [r["alert"] for g in groups["groups"] for r in g["rules"] if "alert" in r]
    stack = client.get("/docs/stack.md").text
    assert names and all(f'id="{n.lower()}"' in stack for n in names)


def test_docs_headings_get_github_anchors() -> None:
    html = render_markdown("## `loss_spike` rule\n\n## Links in messages\n\n## Links in messages\n")
    assert '<h2 id="loss_spike-rule">' in html and '<h2 id="links-in-messages">' in html
    assert '<h2 id="links-in-messages-1">' in html  # a repeated heading, numbered as GitHub does
    assert slug("GPUs: how dcgm-exporter series meet ranks") == (
        "gpus-how-dcgm-exporter-series-meet-ranks"
    )
    assert slug("What the collector sends") == "what-the-collector-sends"


def test_docs_pages_refuse_anything_outside_the_folder(world: tuple[Harness, TestClient]) -> None:
    _, client = world
    for path in ("/docs/nope.md", "/docs/..%2Fpyproject.toml", "/docs/.hidden", "/docs/%2e%2e"):
        assert client.get(path).status_code == 404, path
    assert client.get("/docs/../pyproject.toml").status_code == 404


def test_docs_swagger_ui_keeps_its_exact_path(world: tuple[Harness, TestClient]) -> None:
    _, client = world
    swagger = client.get("/docs")
    assert swagger.status_code == 200 and "swagger-ui" in swagger.text
    paths = client.get("/openapi.json").json()["paths"]
    assert "/runs/{run}/series" in paths
    assert "/" not in paths and "/docs/{name}" not in paths


def test_series_route_serves_a_ranks_history(world: tuple[Harness, TestClient]) -> None:
    _, client = world
    body = client.get("/runs/demo/series", params={"metric": ["loss", "lr"], "rank": 5}).json()
    assert body["run"] == "demo" and body["rank"] == 5 and body["last_step"] == 20
    loss = body["metrics"]["loss"]
    assert loss["steps"] == list(range(1, 21)) and loss["samples_per_bucket"] == 1
    assert loss["values"][-1] is None and loss["values"][0] == pytest.approx(2.9)
    assert loss["last_step"] == 20 and loss["last_value"] is None
    assert set(body["metrics"]) == {"loss", "lr"}
    every = client.get("/runs/demo/series").json()  # default: lowest rank, every metric
    assert every["rank"] == 2 and set(every["metrics"]) <= set(SERIES)
    assert {"loss", "lr", "grad_norm"} <= set(every["metrics"])
    quiet = client.get("/runs/demo/series", params={"rank": 7}).json()
    assert quiet["metrics"] == {} and quiet["last_step"] == -1


def test_series_route_refuses_unknown_metrics_runs_and_ranks(
    world: tuple[Harness, TestClient],
) -> None:
    _, client = world
    bad = client.get("/runs/demo/series", params={"metric": "losss"})
    assert bad.status_code == 422 and "'loss'" in bad.json()["detail"][0]["msg"]
    assert client.get("/runs/nope/series").status_code == 404
    assert client.get("/runs/demo/series", params={"rank": 3}).status_code == 404
    assert client.get("/runs/demo/series", params={"rank": -1}).status_code == 422


def test_series_metrics_and_page_routes_are_documented() -> None:
    api = (ROOT / "docs/api.md").read_text()
    for route in ("`GET /runs/{run}/series`", "`GET /`", "`GET /docs/{name}.md`"):
        assert route in api, route
    section = api.split("## `GET /runs/{run}/series`", 1)[1].split("\n## ", 1)[0]
    documented = re.findall(r"`([a-z_]+)`", section.split("an unknown name", 1)[0])
    assert [m for m in documented if m != "metric"] == list(SERIES)


def test_series_metric_type_names_every_series() -> None:
    assert list(get_args(SeriesMetric)) == list(SERIES)


def test_page_and_docs_need_no_token_when_reads_do(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("page-token-0123456789abcdef")
    config = CollectorConfig(api_token_file=str(tmp_path / "token"), api_token_reads=True)
    h = Harness()
    r = FakeRank("demo", 0)
    h.send(r.hello())
    h.send(r.stats(1))
    with TestClient(create_app(dataclasses.replace(h.core, config=config))) as client:
        for path in ("/", "/static/app.js", "/static/vendor/uPlot.min.css", "/docs/rules.md"):
            assert client.get(path).status_code == 200, path
        for path in ("/runs/demo/series", "/alerts", "/runs", "/alerts/stream"):
            assert client.get(path).status_code == 401, path
        for path in ("/static/../alerts", "/docs/..%2Falerts", "/static/%2e%2e/runs"):
            got = client.get(path)
            assert got.status_code in (401, 404) and "alerts" not in got.text[:20], path
        bearer = {"Authorization": "Bearer page-token-0123456789abcdef"}
        assert client.get("/runs/demo/series", headers=bearer).json()["last_step"] == 1
