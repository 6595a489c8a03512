"""Multi-rank failures of real torchrun jobs (gloo, CPU) watched by a real collector: the
scenarios of issue 10, each with the alert it must raise, and a runner that measures the time
from the fault to the alert on one clock (the job's output line and the collector's
``started_at`` on this machine)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.helpers.processes import CollectorProcess
from tests.helpers.trainer_runs import TrainerJob, torchrun_job
from tests.helpers.waiting import wait_until

RULES: dict[str, dict[str, float]] = {
    "rank_stalled": {"seconds": 3.0},
    "trainer_silent": {"seconds": 5.0},
    "rank_missing": {"seconds": 3.0},
    "straggler": {"for_seconds": 2.0},
}
"""Job-level rules with small settings, so that each scenario takes seconds."""
AGENT = ("--heartbeat-seconds", "0.5", "--stall-seconds", "1")
"""Heartbeats twice a second, stacks after a second without a step."""
UNREACHABLE = "tests.helpers.unreachable_rank"


@dataclass(frozen=True)
class Scenario:
    """One multi-rank failure: the job, its fault, and the alert it must raise."""

    name: str
    nproc: int
    rule: str
    rank: int
    """The rank the alert names as its origin or culprit."""
    ranks: tuple[int, ...]
    """The ranks the alert covers (all of them, ascending)."""
    words: tuple[str, ...]
    """Words its message must hold: the phase, a frame of the right function."""
    fault: str
    """A line the job prints when the fault happens (the start of the measured time)."""
    args: tuple[str, ...] = ()
    first_step: int | None = None
    """The step the alert must say it began at, when the scenario fixes it."""
    kill: int | None = None
    """The fault is this rank's process killed by SIGKILL (no bye), once it trains."""
    module: str = "gradwatch.trainer"
    env: Mapping[str, str] = field(default_factory=dict)

    @property
    def run(self) -> str:
        return f"{self.name}-{self.nproc}"


def _inject(kind: str, step: int, rank: int = 1, *args: str) -> tuple[str, ...]:
    return ("--inject", f"{kind}@{step}:rank={rank}", *args)


def scenarios(nproc: int) -> dict[str, Scenario]:
    """The scenarios on ``nproc`` ranks, by name."""
    others = tuple(r for r in range(nproc) if r != 1)
    every = tuple(range(nproc))
    odd = (1,) if nproc >= 3 else every  # with 2 ranks either may be the odd one
    hang = Scenario(
        "hang",
        nproc,
        "rank_stalled",
        1,
        every,
        (
            "rank 1 stuck in backward",
            "in FaultInjector.before_backward",
            f"{'rank 0 waits' if nproc == 2 else 'ranks ' + _list(others) + ' wait'} in backward",
        ),
        "[rank 1] inject hang@20",
        ("--steps", "60", *_inject("hang", 20)),
    )
    raised = Scenario(
        "raise",
        nproc,
        "rank_crashed",
        1,
        every,
        (
            "rank 1 crashed at step 20",
            "gradwatch.trainer.injector.InjectedCrash",
            "crashed on purpose at injector.py",
            "in FaultInjector._start",
        ),
        "[rank 1] inject raise@20",
        ("--steps", "60", *_inject("raise", 20)),
    )
    oom = Scenario(
        "oom",
        nproc,
        "rank_crashed",
        1,
        every,
        (
            "rank 1 ran out of memory at step 20",
            "can't allocate memory",
            "in FaultInjector.before_backward",
        ),
        "[rank 1] inject oom@20",
        ("--steps", "60", *_inject("oom", 20)),
    )
    slow = Scenario(
        "slow",
        nproc,
        "straggler",
        1,
        (1,),
        ("rank 1 spends", "outside collectives (data ", "the others wait for it in backward"),
        "[rank 1] inject slow@20",
        ("--steps", "2000", *_inject("slow", 20)),
    )
    desync = Scenario(
        "desync",
        nproc,
        "replica_divergence",
        odd[0],
        odd,
        ("weight norms of", "(full step "),
        "[rank 1] inject desync@20",
        ("--steps", "60", "--full-every", "5", *_inject("desync", 20)),
        first_step=25,
    )
    nan = Scenario(
        "nan",
        nproc,
        "non_finite",
        1,
        every,
        ("loss is nan",),
        "[rank 1] inject nan@20",
        ("--steps", "40", *_inject("nan", 20)),
        first_step=20,
    )
    missing = Scenario(
        "missing", nproc, "rank_missing", 1, (1,),
        (f"1 of {nproc} ranks never said hello", "rank 1 (seen: "),
        "", ("--steps", "5000"), module=UNREACHABLE, env={"GRADWATCH_UNREACHABLE_RANK": "1"},
    )  # fmt: skip
    killed = Scenario(
        "killed", nproc, "trainer_silent", 1, (1,),
        ("no frame, not even a heartbeat, for", "the process is gone or unreachable"),
        "", ("--steps", "5000"), kill=1,
    )  # fmt: skip
    return {s.name: s for s in (hang, raised, oom, slow, desync, nan, missing, killed)}


def _list(ranks: tuple[int, ...]) -> str:
    from gradwatch.collector.rank_ranges import compact_ranks

    return compact_ranks(ranks)


def collector_for_jobs(
    workdir: Path, rules_: Mapping[str, Mapping[str, float]] = RULES
) -> CollectorProcess:
    """A collector with ``rules_`` settings (default :data:`RULES`; the others at defaults)."""
    rules = workdir / "rules.yaml"
    rules.write_text(yaml.safe_dump({"rules": {k: dict(v) for k, v in rules_.items()}}))
    return CollectorProcess(workdir, "--rules", str(rules))


def start_job(collector: CollectorProcess, run: str, *args: str, **kw: Any) -> TrainerJob:
    """A torchrun job of the demo trainer sending to ``collector`` as run ``run``."""
    env = {"GRADWATCH_ENDPOINT": collector.listen, "GRADWATCH_RUN": run, **kw.pop("env", {})}
    return torchrun_job("--eval-every", "0", *AGENT, *args, env=env, **kw)


@dataclass
class Outcome:
    """What a scenario raised, and how long after its fault."""

    alert: dict[str, Any]
    seconds: float
    """From the fault (its output line; for a missing rank, the first hello) to the alert's
    ``started_at`` on the collector's clock."""
    output: str


def run_scenario(collector: CollectorProcess, sc: Scenario, timeout: float = 90.0) -> Outcome:
    """Run ``sc``'s job until its rule fires on its run; then stop the job."""
    with start_job(collector, sc.run, *sc.args, nproc=sc.nproc, module=sc.module, env=sc.env) as j:
        fault: float | None = None
        if sc.kill is not None:
            pid = wait_until(lambda: _training_pid(collector, sc.run, sc.kill), timeout)
            os.kill(pid, signal.SIGKILL)
            fault = time.time()
        alert = collector.wait_for_alert(sc.rule, timeout, run=sc.run)
        if fault is None and sc.fault:
            fault = j.wait_for(sc.fault)
        elif fault is None:  # a missing rank: its absence counts from the first hello
            runs = collector.get("/runs")["runs"]
            fault = min(r["first_seen"] for x in runs if x["run"] == sc.run for r in x["ranks"])
        wait_until(lambda: _settled(collector, sc, alert["id"]), 30)
        alert = collector.get(f"/alerts/{alert['id']}")
    return Outcome(alert, alert["started_at"] - fault, j.output)


def _training_pid(collector: CollectorProcess, run: str, rank: int) -> int | None:
    """The pid of ``rank`` of ``run`` once it has completed a few steps."""
    if not any(r["run"] == run for r in collector.get("/runs")["runs"]):
        return None
    ranks = {r["rank"]: r for r in collector.get(f"/runs/{run}")["ranks"]}
    got = ranks.get(rank)
    return int(got["pid"]) if got is not None and got["step"] >= 5 else None


def _settled(collector: CollectorProcess, sc: Scenario, alert_id: int) -> bool:
    """The alert covers the scenario's ranks (late ranks join it within a few frames)."""
    return set(collector.get(f"/alerts/{alert_id}")["ranks"]) >= set(sc.ranks)
