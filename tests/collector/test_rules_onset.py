"""``first_step`` is the onset for every rule: the step the condition began, even when the rule
(or its settings) waits for the condition to last before it reports it."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from gradwatch.collector.rules import CATALOGUE
from tests.helpers.fake_rank import FakeRank, Harness

ONSET = 40
FC1 = "blocks.1.mlp.fc.weight"
MiB = 2**20
Scenario = Callable[[FakeRank, int], dict[str, object]]
"""Frame arguments for ``step``: healthy before ONSET, faulty from it."""


def _bad(step: int) -> bool:
    return step >= ONSET


SCENARIOS: dict[str, tuple[dict[str, object], Scenario]] = {
    "non_finite": ({}, lambda r, s: {"loss": math.nan} if _bad(s) else {}),
    "loss_spike": ({}, lambda r, s: {"loss": 40.0 if _bad(s) else 2.0 + 0.01 * (s % 3)}),
    "grad_explosion": (
        {},
        lambda r, s: {"grad": {FC1: 400.0}, "metrics": {"grad_norm": 400.0}} if _bad(s) else {},
    ),
    "vanishing_gradients": ({}, lambda r, s: {"metrics": {"grad_norm": 1e-9}} if _bad(s) else {}),
    "update_ratio_high": ({}, lambda r, s: {"ratio": {FC1: 0.5 if _bad(s) else 1e-3}}),
    "update_ratio_low": ({}, lambda r, s: {"ratio": {FC1: 1e-9 if _bad(s) else 1e-3}}),
    "frozen_parameters": ({}, lambda r, s: {"ratio": {FC1: 0.0 if _bad(s) else 1e-3}}),
    "lr_sanity": ({}, lambda r, s: {"lr": (1e-5 if _bad(s) else 1e-3,)}),
    "loss_plateau": (
        {"lookback": 30, "window": 5},
        lambda r, s: {"loss": 2.0 if _bad(s) else 10.0 - 0.2 * s},
    ),
    "weight_norm_spike": ({}, lambda r, s: {"weight": {FC1: 80.0 if _bad(s) else 5.0}}),
    "dead_parameters": ({}, lambda r, s: {"nograd": [FC1]} if _bad(s) else {}),
    "throughput_drop": (
        {},
        lambda r, s: {"metrics": {"tokens_per_second": 200.0 if _bad(s) else 1000.0}},
    ),
    "step_time_increase": (
        {},
        lambda r, s: {"metrics": {"step_time_seconds": 0.5 if _bad(s) else 0.1}},
    ),
    "memory_pressure": (
        {},
        lambda r, s: {
            "metrics": {"rss_bytes": (99 if _bad(s) else 50) * MiB, "memory_total_bytes": 100 * MiB}
        },
    ),
    "memory_growth": (
        {},
        lambda r, s: {"metrics": {"rss_bytes": 400 * MiB + max(0, s - ONSET + 1) * 4 * MiB}},
    ),
    "val_divergence": (
        {},
        lambda r, s: {
            "loss": 3.0 - 0.01 * s,
            "scalars": {"val_loss": (2.0 - 0.01 * s) if s < ONSET else 2.0 + 0.05 * (s - ONSET)},
        },
    ),
}
"""Per rule: settings overrides, and the frames of a run whose fault begins at ONSET."""
TICKED = {"trainer_silent"}
"""Rules judged on the collector's clock (tested below with a silent rank)."""
JOB = {"rank_stalled", "rank_crashed", "rank_missing", "straggler", "replica_divergence"}
"""Run-level rules: their first_step is checked with them (test_rules_liveness.py,
test_rules_replicas.py) on jobs of several ranks."""
ADMISSION = {"duplicate_rank", "collector_limit"}
"""Rules about sessions and the collector's limits: their step is the live session's (tested
in test_admission.py), not the onset of a training condition."""


def test_onset_every_rule_has_a_scenario() -> None:
    assert set(SCENARIOS) | TICKED | JOB | ADMISSION == set(CATALOGUE)


@pytest.mark.parametrize("rule", sorted(SCENARIOS))
def test_onset_first_step_is_where_the_condition_began(rule: str) -> None:
    overrides, frames = SCENARIOS[rule]
    h, r = Harness(rule, **overrides), FakeRank()
    h.send(r.hello())
    for step in range(1, ONSET + 200):
        h.send(r.stats(step, full=step % 2 == 0, **frames(r, step)))  # type: ignore[arg-type]
        if h.firing(rule):
            break
    [alert] = h.firing(rule)
    tolerance = 2 if rule == "val_divergence" else 1  # the first val point above the limit
    assert ONSET - 1 <= alert.first_step <= ONSET + tolerance, (rule, alert.first_step)


def test_onset_trainer_silent_is_the_last_step_seen() -> None:
    h, r = Harness("trainer_silent", floor_seconds=3.0), FakeRank()
    h.send(r.hello())
    for step in range(1, ONSET + 1):
        h.send(r.stats(step), dt=0.1)
    h.tick(10.0)
    [alert] = h.firing("trainer_silent")
    assert alert.first_step == ONSET
