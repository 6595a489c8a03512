"""Shared fixtures: a real collector process per test, started on free ports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.processes import CollectorProcess


@pytest.fixture
def collector_process(tmp_path: Path) -> Iterator[CollectorProcess]:
    """A collector subprocess with default rules, stopped after the test."""
    proc = CollectorProcess(tmp_path)
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()
