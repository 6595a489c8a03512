"""``gradwatch demo`` (what ``make demo`` runs): a real collector and three faulty trainings,
each fault reported by its rule, then a clean exit."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.helpers.processes import PYTHON
from tests.helpers.waiting import free_port

pytestmark = pytest.mark.slow


def test_cli_demo_reports_each_injected_fault_and_exits(tmp_path: Path) -> None:
    http, zmq = free_port(), free_port()
    done = subprocess.run(
        [PYTHON, "-m", "gradwatch.cli", "demo", "--exit", "--workdir", str(tmp_path / "w"),
         "--http-port", str(http), "--zmq-port", str(zmq)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    fired = set(re.findall(r"^ALERT (\w+) \[\w+\] run=(demo-\w+)", done.stdout, re.M))
    assert {("loss_spike", "demo-spike"), ("non_finite", "demo-nan")} <= fired, fired
    assert fired & {("grad_explosion", "demo-explode"), ("lr_sanity", "demo-explode")}, fired
    assert f"curl localhost:{http}/alerts" in done.stdout
