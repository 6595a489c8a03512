"""Shared fixtures: a real collector process per test, started on free ports."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from support import CollectorProcess  # noqa: E402


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[CollectorProcess]:
    """A collector subprocess with default rules, stopped after the test."""
    proc = CollectorProcess(tmp_path)
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()
