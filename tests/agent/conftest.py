"""Fixtures for the agent tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from agent_helpers import Collector


@pytest.fixture
def collector() -> Iterator[Collector]:
    c = Collector()
    yield c
    c.close()
