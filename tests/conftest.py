"""Shared fixtures: a real collector process per test, started on free ports."""

from __future__ import annotations

import signal
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


def pytest_configure(config: pytest.Config) -> None:
    """Run from a background job (``make test &``, nohup, CI's shells), pytest inherits SIGINT
    ignored, and so would every process it starts: Ctrl-C tests would then wait forever. A
    Python handler here makes the children start with SIGINT at its default again."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
