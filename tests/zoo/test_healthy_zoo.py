"""Healthy runs of every kind users train raise no alert at all, on a machine kept busy.

A CPU burner keeps both cores busy for the whole module (scheduler jitter, slow steps), as on a
shared node; each program trains 500 steps against one collector. Any alert, of any severity,
in any state, on a healthy run is a false alarm.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.processes import CollectorProcess, run_trainer, stop_process
from tests.zoo.programs import PROGRAMS

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
ROOT = Path(__file__).resolve().parents[2]
STEPS = 500
GPT = {
    "gpt-adamw": ("--size", "demo", "--optimizer", "adamw", "--lr", "1e-3", "--warmup", "50"),
    "gpt-muon": ("--size", "tiny", "--optimizer", "muon", "--warmup", "30"),
    "gpt-sgd": ("--size", "tiny", "--optimizer", "sgd", "--lr", "0.1", "--warmup", "150"),
}
"""The demo trainer's GPT with each optimizer (the demo size once: it is the slowest)."""
BURN = "import os\nwhile True: os.getpid()"


@pytest.fixture(scope="module")
def busy_collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CollectorProcess]:
    """A collector with default rules, and both cores kept busy by two burner processes."""
    burners = [subprocess.Popen([sys.executable, "-c", BURN]) for _ in range(os.cpu_count() or 2)]
    proc = CollectorProcess(tmp_path_factory.mktemp("zoo"))
    try:
        proc.start()
        yield proc
    finally:
        proc.stop()
        for b in burners:
            stop_process(b)


def _no_alerts(collector: CollectorProcess, run: str) -> None:
    summary = collector.wait_ended(run, timeout=120)
    assert summary["ranks"][0]["last_step"] >= STEPS, summary
    alerts = collector.alerts(run=run)
    assert alerts == [], [(a["rule"], a["severity"], a["step"], a["message"]) for a in alerts]


@pytest.mark.parametrize("name", list(GPT))
def test_zoo_healthy_demo_gpt_raises_no_alert(busy_collector: CollectorProcess, name: str) -> None:
    extra = ("--full-every", "10", "--log-every", "1000", *GPT[name])
    run_trainer(busy_collector.listen, f"zoo-{name}", STEPS, [], *extra, timeout=600)
    _no_alerts(busy_collector, f"zoo-{name}")


@pytest.mark.parametrize("name", list(PROGRAMS))
def test_zoo_healthy_program_raises_no_alert(busy_collector: CollectorProcess, name: str) -> None:
    run = f"zoo-{name}"
    cmd = [sys.executable, "-m", "tests.zoo", name, "--endpoint", busy_collector.listen,
           "--run-name", run, "--steps", str(STEPS)]  # fmt: skip
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    _no_alerts(busy_collector, run)
