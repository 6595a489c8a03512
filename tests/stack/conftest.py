"""Fixtures of the stack tests: the stand-in for Slack and PagerDuty."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helpers.stack import Receiver


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A local HTTP server recording what Alertmanager posts to Slack and PagerDuty."""
    server = Receiver()
    yield server
    server.shutdown()
    server.server_close()
