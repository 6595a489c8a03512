"""The page and the docs ship in the wheel: a collector installed from it serves both."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import sys
from fastapi.testclient import TestClient
from gradwatch.collector import pages
from gradwatch.collector.api import create_app
from gradwatch.collector.config import CollectorConfig
from gradwatch.collector.core import build_core

assert pages.__file__.startswith(sys.argv[1]), pages.__file__
client = TestClient(create_app(build_core(CollectorConfig(), persist=False)))
assert "/static/app.js" in client.get("/").text
assert client.get("/static/vendor/uPlot.iife.min.js").status_code == 200
assert 'id="non_finite"' in client.get("/docs/rules.md").text
print("served from", pages.DOCS)
"""


@pytest.mark.slow
def test_wheel_holds_the_page_and_the_docs_and_serves_them(tmp_path: Path) -> None:
    out = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(out), str(ROOT)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    [wheel] = out.glob("gradwatch-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    docs = {f"gradwatch/collector/docs/{p.name}" for p in (ROOT / "docs").glob("*.md")}
    static = {
        f"gradwatch/collector/{p.relative_to(ROOT / 'collector').as_posix()}"
        for p in (ROOT / "collector/static").rglob("*")
        if p.is_file()
    }
    assert docs and docs <= names
    assert "gradwatch/collector/static/vendor/LICENSE.uPlot" in static and static <= names
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    env = {**os.environ, "PYTHONPATH": str(site)}
    probe = subprocess.run(
        [sys.executable, "-c", PROBE, str(site)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr
    assert f"served from {site}" in probe.stdout
