"""Every trainer fault, the rule that must catch it, and how late it may be: one table for the
scenario tests and for docs/detection.md (``python -m tests.scenarios.report``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ONSET = 30
"""Step at which each fault starts."""
BASE = ("--size", "tiny", "--full-every", "2", "--threads", "1", "--log-every", "1000")
"""Trainer arguments of every scenario (tiny steps of a few ms on CPU)."""


@dataclass(frozen=True)
class Scenario:
    kind: str
    """The trainer's fault kind (``--inject KIND@30``)."""
    rules: tuple[str, ...]
    """Any of these rules detects it (the first listed is the one meant)."""
    max_delay: int
    """Most steps from the injection to the alert's first_step (its onset)."""
    named: bool = False
    """The alert must name one of the parameters the fault acts on."""
    early: int = 0
    """Most steps before the injection the onset may be placed: rules whose evidence is wall
    time or process memory start their streak or fit at the first busy step of a loaded
    machine, which may come just before the fault."""
    steps: int = 60
    args: tuple[str, ...] = ()
    """Trainer arguments beyond BASE."""


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("nan", ("non_finite",), 0),
    Scenario("spike", ("loss_spike",), 0),
    Scenario("explode", ("grad_explosion",), 2),
    Scenario("freeze", ("frozen_parameters",), 1, named=True),
    Scenario("bf16", ("frozen_parameters",), 6, named=True),
    Scenario("lr_low", ("lr_sanity",), 1),
    Scenario("dead", ("dead_parameters",), 1, named=True),
    Scenario("leak", ("memory_growth",), 5, early=5),
    Scenario("slow", ("step_time_increase", "throughput_drop"), 5, early=5),
    Scenario("overfit", ("val_divergence",), 60, steps=150, args=("--eval-every", "5")),
    Scenario("plateau", ("loss_plateau",), 15, steps=120),
    Scenario("vanish", ("vanishing_gradients",), 1),
    Scenario("ratio_high", ("update_ratio_high",), 4, named=True),
    Scenario("ratio_low", ("update_ratio_low",), 4, named=True),
    Scenario("weight_jump", ("weight_norm_spike",), 2, named=True),
    Scenario("mem_pressure", ("memory_pressure",), 6, args=("--memory-limit", str(1 << 30))),
)

TINY_STEPS_RULES: dict[str, dict[str, Any]] = {
    "trainer_silent": {"floor_seconds": 3.0},
    "rank_stalled": {"seconds": 3.0},
    "throughput_drop": {"for_seconds": 0.2, "for_steps": 5},
    "step_time_increase": {"for_seconds": 0.2, "for_steps": 5},
    "memory_growth": {"for_seconds": 0.0, "for_steps": 3, "window": 10},
    "loss_plateau": {"lookback": 40, "window": 10},
}
"""Settings for runs of a few ms a step, as a user with such a job would set them: the
defaults wait for a minute (and 1,000 frames for a plateau), made for steps of 0.1-10 s."""


def rules_toml(settings: dict[str, dict[str, Any]]) -> str:
    """``settings`` as a rules file (``--rules``)."""
    lines = []
    for rule, values in settings.items():
        lines.append(f"[rules.{rule}]")
        lines += [f"{k} = {v!r}" for k, v in values.items()]
    return "\n".join(lines) + "\n"
