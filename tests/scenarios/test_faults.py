"""Fault scenarios: the real trainer with one injected fault against a real collector.

Each fault of tests/scenarios/catalogue.py starts at step ONSET; its rule must fire with
``first_step`` (the onset) within the scenario's ``max_delay`` steps, naming one of
``trainer.faults.targets`` where the fault acts on parameters. All scenarios share one
collector (different run names), with the settings a user of few-ms steps would choose.
Healthy runs are in tests/zoo (no alert at all, on a busy machine).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.processes import CollectorProcess, run_trainer, start_trainer, stop_process
from tests.scenarios.catalogue import BASE, ONSET, SCENARIOS, TINY_STEPS_RULES, Scenario, rules_toml

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def collector_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CollectorProcess]:
    work = tmp_path_factory.mktemp("scenarios")
    rules = work / "rules.toml"
    rules.write_text(rules_toml(TINY_STEPS_RULES))
    proc = CollectorProcess(work, "--rules", str(rules))
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def targets(kind: str) -> list[str]:
    from gradwatch.trainer.faults import targets
    from gradwatch.trainer.model import GPT, GPTConfig

    return targets(kind, GPT(GPTConfig.preset("tiny")))


def detect(collector: CollectorProcess, s: Scenario) -> dict[str, Any]:
    """Run the scenario's trainer; return its earliest alert from ``s.rules``."""
    run = f"fault-{s.kind}"
    run_trainer(collector.listen, run, s.steps, [f"{s.kind}@{ONSET}"], *BASE, *s.args)
    collector.wait_ended(run)
    found = [a for a in collector.alerts(run=run) if a["rule"] in s.rules]
    found = [a for a in found if a["state"] in ("firing", "resolved")]
    assert found, f"{s.kind}: no {s.rules} alert; got {collector.alerts(run=run)}"
    return min(found, key=lambda a: int(a["first_step"]))


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.kind for s in SCENARIOS])
def test_fault_is_detected_at_its_onset(
    collector_process: CollectorProcess, scenario: Scenario
) -> None:
    alert = detect(collector_process, scenario)
    delay = int(alert["first_step"]) - ONSET
    print(f"{scenario.kind}: {alert['rule']} onset {delay:+d}, at {alert['history'][0]}")
    assert -scenario.early <= delay <= scenario.max_delay, alert
    if scenario.named:
        assert alert["parameter"] in targets(scenario.kind), alert
    if scenario.kind == "bf16":  # seed 003: say why the layer is frozen, and what to do
        assert "round to zero" in alert["message"] and "fp32 master weights" in alert["message"]


def test_hang_is_detected_as_rank_stalled_where_it_hangs(
    collector_process: CollectorProcess, tmp_path: Path
) -> None:
    """The process is alive (its heartbeats go on) but no step completes: rank_stalled, naming
    the phase and the frame it hangs in, not trainer_silent."""
    run = "fault-hang"
    agent = ("--heartbeat-seconds", "0.5", "--stall-seconds", "1")
    proc = start_trainer(
        collector_process.listen, run, 60, [f"hang@{ONSET}"], *BASE, *agent,
        log=tmp_path / "hang.log",
    )  # fmt: skip
    try:
        alert = collector_process.wait_for_alert("rank_stalled", timeout=60, run=run)
        assert alert["state"] == "firing" and alert["step"] == ONSET - 1
        assert alert["message"].startswith("rank 0 stuck in backward for ")
        assert "in FaultInjector.before_backward" in alert["message"]
        assert collector_process.alerts(run=run, rule="trainer_silent") == []
    finally:
        stop_process(proc)
