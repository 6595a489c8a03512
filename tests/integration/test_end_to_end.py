"""The whole path, real at every hop: trainer subprocess → agent → ZeroMQ → collector → HTTP."""

from __future__ import annotations

import pytest

from tests.helpers.processes import CollectorProcess, run_trainer

# fault, step it is injected at, the rule that must name it
FAULTS = [("nan", 30, "non_finite"), ("spike", 40, "loss_spike"), ("explode", 40, "grad_explosion")]


@pytest.mark.parametrize(("fault", "at", "rule"), FAULTS, ids=[f[0] for f in FAULTS])
def test_end_to_end_injected_fault_raises_its_alert_within_two_steps(
    collector_process: CollectorProcess, fault: str, at: int, rule: str
) -> None:
    run = f"e2e-{fault}"
    out = run_trainer(collector_process.listen, run, at + 10, [f"{fault}@{at}"], "--size", "tiny")
    assert f"inject {fault}@{at}" in out.stdout

    alert = collector_process.wait_for_alert(rule, timeout=30, run=run)
    assert alert["run"] == run and alert["rank"] == 0
    assert at <= alert["first_step"] <= at + 2, alert
    assert alert["state"] in ("pending", "firing", "resolved")
    assert alert["message"]
    # The console shows one line per new alert.
    assert rule in collector_process.log()


def test_end_to_end_healthy_run_raises_no_alert(collector_process: CollectorProcess) -> None:
    run_trainer(collector_process.listen, "e2e-healthy", 200, (), "--size", "tiny")

    rank = collector_process.wait_ended("e2e-healthy")["ranks"][0]
    assert rank["last_step"] == 200 and rank["dropped"] == 0
    assert collector_process.alerts(run="e2e-healthy") == []
