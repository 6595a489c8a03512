"""Fault scenarios: the real trainer with one injected fault against a real collector.

Each fault starts at step ONSET; the right rule must fire within 10 steps (NaN: the same
step), naming one of ``trainer.faults.targets`` where the fault has a parameter. Healthy
runs of >= 300 steps with different sizes, optimizers and warmups must raise no alert at all.
All scenarios share one collector (different run names) to stay fast on 2 cores.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.processes import CollectorProcess, run_trainer, start_trainer, stop_process

pytestmark = pytest.mark.slow

ONSET = 30
STEPS = 60
BASE = ("--size", "tiny", "--full-every", "2", "--threads", "1", "--log-every", "1000")
EXPECTED: dict[str, tuple[str, ...]] = {
    "nan": ("non_finite",),
    "spike": ("loss_spike",),
    "explode": ("grad_explosion",),
    "freeze": ("frozen_parameters",),
    "bf16": ("frozen_parameters",),
    "lr_low": ("lr_sanity",),
    "dead": ("dead_parameters",),
    "leak": ("memory_growth",),
    "slow": ("step_time_increase", "throughput_drop"),
}
NAMED = ("freeze", "bf16", "dead")
"""Faults on specific parameters: the alert must name one of them."""


@pytest.fixture(scope="module")
def collector_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CollectorProcess]:
    work = tmp_path_factory.mktemp("scenarios")
    rules = work / "rules.toml"
    rules.write_text("[rules.trainer_silent]\nfloor_seconds = 3.0\n")
    proc = CollectorProcess(work, "--rules", str(rules))
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def _targets(kind: str) -> list[str]:
    from gradwatch.trainer.faults import targets
    from gradwatch.trainer.model import GPT, GPTConfig

    return targets(kind, GPT(GPTConfig.preset("tiny")))


def _first_step(alert: dict[str, Any]) -> int:
    return int(alert["first_step"])


@pytest.mark.parametrize("kind", list(EXPECTED))
def test_fault_is_detected_within_ten_steps(collector_process: CollectorProcess, kind: str) -> None:
    run = f"fault-{kind}"
    run_trainer(collector_process.listen, run, STEPS, [f"{kind}@{ONSET}"], *BASE)
    collector_process.wait_ended(run)
    found = [a for a in collector_process.alerts(run=run) if a["rule"] in EXPECTED[kind]]
    found = [a for a in found if a["state"] in ("firing", "resolved")]
    assert found, f"{kind}: no {EXPECTED[kind]} alert; got {collector_process.alerts(run=run)}"
    alert = min(found, key=_first_step)
    delay = _first_step(alert) - ONSET
    print(f"{kind}: {alert['rule']} at step {_first_step(alert)} (+{delay}) {alert['parameter']}")
    assert 0 <= delay <= (0 if kind == "nan" else 10), alert
    if kind in NAMED:
        assert alert["parameter"] in _targets(kind), alert
    if kind == "bf16":  # seed 003: say why the layer is frozen, and what to do
        assert "round to zero" in alert["message"] and "fp32 master weights" in alert["message"]


def test_hang_is_detected_as_trainer_silent(
    collector_process: CollectorProcess, tmp_path: Path
) -> None:
    run = "fault-hang"
    proc = start_trainer(
        collector_process.listen, run, STEPS, [f"hang@{ONSET}"], *BASE, log=tmp_path / "hang.log"
    )
    try:
        alert = collector_process.wait_for_alert("trainer_silent", timeout=60, run=run)
        assert alert["state"] == "firing" and ONSET - 2 <= alert["step"] <= ONSET
    finally:
        stop_process(proc)


HEALTHY = {
    "healthy-adamw-tiny": ("--size", "tiny", "--optimizer", "adamw", "--warmup", "20"),
    "healthy-muon-tiny": ("--size", "tiny", "--optimizer", "muon", "--warmup", "30"),
    "healthy-sgd-tiny": ("--size", "tiny", "--optimizer", "sgd", "--lr", "0.1", "--warmup", "150"),
    "healthy-adamw-demo": (
        "--size",
        "demo",
        "--optimizer",
        "adamw",
        "--lr",
        "1e-3",
        "--warmup",
        "50",
    ),
}


@pytest.mark.parametrize("run", list(HEALTHY))
def test_healthy_run_raises_no_alert(collector_process: CollectorProcess, run: str) -> None:
    extra = ("--full-every", "5", "--threads", "1", "--log-every", "1000")
    run_trainer(collector_process.listen, run, 300, [], *HEALTHY[run], *extra)
    summary = collector_process.wait_ended(run)
    assert summary["ranks"][0]["last_step"] == 300
    assert collector_process.alerts(run=run) == []
