"""Real torchrun jobs (gloo, CPU, 2 and 4 ranks) against a real collector: each multi-rank
failure raises one alert for the job, naming the right rank, phase and frame; a healthy job
with an evaluation longer than rank_stalled's limit raises nothing."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.jobs import (
    RULES,
    Scenario,
    collector_for_jobs,
    run_scenario,
    scenarios,
    start_job,
)
from tests.helpers.processes import CollectorProcess
from tests.helpers.waiting import wait_until

pytestmark = pytest.mark.slow  # each test runs a torchrun job: seconds to ~20 s on 2 cores
# Two ranks where two suffice, four where the majority or the culprit among many matters
# (tests/distributed/report.py measures every scenario on both).

TWO, FOUR = scenarios(2), scenarios(4)


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CollectorProcess]:
    """One collector for the module (each test has its own run)."""
    proc = collector_for_jobs(Path(tmp_path_factory.mktemp("jobs"))).start()
    try:
        yield proc
    finally:
        proc.stop()


def check(collector: CollectorProcess, sc: Scenario) -> None:
    outcome = run_scenario(collector, sc)
    alert = outcome.alert
    assert (alert["rank"], alert["ranks"]) == (sc.rank, list(sc.ranks)), alert
    for words in sc.words:
        assert words in alert["message"], (words, alert["message"])
    if sc.first_step is not None:
        assert alert["first_step"] == sc.first_step, alert
    same = collector.alerts(run=sc.run, rule=sc.rule)
    assert len(same) == 1, same  # one alert for the job, not one per rank


@pytest.mark.parametrize(
    "sc",
    [TWO["hang"], FOUR["hang"], TWO["raise"], TWO["oom"], TWO["slow"], FOUR["desync"],
     TWO["nan"], TWO["missing"], TWO["killed"]],
    ids=lambda sc: sc.run,
)  # fmt: skip
def test_job_failure_raises_one_alert_naming_the_rank(
    collector: CollectorProcess, sc: Scenario
) -> None:
    check(collector, sc)
    if sc.name == "hang":  # alive and stuck: heartbeats keep trainer_silent quiet
        assert collector.alerts(run=sc.run, rule="trainer_silent") == []


def test_healthy_job_with_a_long_evaluation_raises_nothing(tmp_path: Path) -> None:
    """rank_stalled at 3 s and an evaluation of 5 s; the other rules at their defaults (a
    straggler held for 2 s would be this shared machine's load, not the job)."""
    tight = {k: v for k, v in RULES.items() if k in ("rank_stalled", "trainer_silent")}
    with collector_for_jobs(tmp_path, tight) as collector:
        _healthy(collector)


def _healthy(collector: CollectorProcess) -> None:
    run = "healthy-4"
    args = ("--steps", "30", "--eval-every", "15", "--inject", "long_eval@15")
    with start_job(collector, run, *args, nproc=4) as job:

        def evaluating() -> bool:
            ranks = collector.get(f"/runs/{run}")["ranks"] if job.proc else []
            return any(r["phase"] == "eval" and r["declared"] for r in ranks)

        wait_until(lambda: _live(collector, run) and evaluating(), 60)
        assert job.wait() == 0, job.output[-3000:]
    collector.wait_ended(run, 60)
    assert collector.alerts(run=run) == []


def _live(collector: CollectorProcess, run: str) -> bool:
    return any(r["run"] == run for r in collector.get("/runs")["runs"])


def test_job_told_to_stop_on_a_nan_stops_every_rank_at_the_same_step(
    collector: CollectorProcess,
) -> None:
    """``GRADWATCH_ON_ALERT=non_finite=stop``: the NaN on rank 1 reaches the collector, the
    alert comes back to both ranks, and both leave the loop at the alert's ``at_step`` (none
    is left waiting in an all-reduce), long before the job's last step."""
    run, steps = "stop-2", 100_000
    args = ("--steps", str(steps), "--inject", "nan@20:rank=1", "--log-every", "1000")
    env = {"GRADWATCH_ON_ALERT": "non_finite=stop"}
    with start_job(collector, run, *args, env=env) as job:
        assert job.wait(timeout=300) == 0, job.output[-3000:]
    stops = re.findall(
        r"^\[rank (\d)\] step (\d+): stopping, as asked on alert \((\w+)", job.output, re.M
    )
    assert sorted(r for r, _, _ in stops) == ["0", "1"], job.output[-3000:]
    assert len({s for _, s, _ in stops}) == 1 and {r for _, _, r in stops} == {"non_finite"}
    assert 20 < int(stops[0][1]) < steps
    assert [a["rule"] for a in collector.alerts(run=run, rule="non_finite")] == ["non_finite"]
