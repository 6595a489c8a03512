"""Fixtures for the agent tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helpers.frame_sink import FrameSink


@pytest.fixture
def sink() -> Iterator[FrameSink]:
    """A real ZeroMQ socket on a free port that decodes whatever the agent sends."""
    s = FrameSink()
    yield s
    s.close()
