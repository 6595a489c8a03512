"""non_finite: NaN or Inf in the loss, a gradient or a weight."""

from __future__ import annotations

import math
from dataclasses import dataclass

from gradwatch.wire import metrics as m

from ..state import RankState
from .base import Finding, Rule, RuleSettings, finite, name_list


@dataclass(frozen=True)
class NonFiniteSettings(RuleSettings):
    for_checks: int = 0
    clear_checks: int = 5
    cooldown_seconds: float = 60.0
    topk: int = 5
    """How many offending parameters the message names."""


@dataclass
class NonFiniteMemory:
    parameter: str | None = None
    """The first offender seen; kept while the condition lasts so the alert keeps its name."""
    loss_step: int | None = None
    """The step this rank's own loss went non-finite (while the condition lasts)."""


class NonFinite(Rule[NonFiniteSettings, NonFiniteMemory]):
    """The loss, a gradient or a weight became NaN or Inf.

    Fires on the same step (no pending). Names the first parameter whose gradient norm or
    weight norm is not finite: usually where the blow-up started. Under DDP one rank's NaN
    reaches every rank's gradients through the all-reduce: the job's one alert names as its
    ``rank`` the rank whose own loss went non-finite first. What to do: stop the run,
    restore the last good checkpoint, lower the learning rate or enable gradient clipping,
    and look for a bad batch, a division by zero or an fp16 overflow around that step.
    """

    name = "non_finite"
    severity = "critical"
    action = (
        "stop the run and restore the last good checkpoint; lower the LR or enable gradient "
        "clipping (max_norm=1.0); check the batch and fp16 overflow at this step"
    )
    settings_type = NonFiniteSettings

    def new_memory(self) -> NonFiniteMemory:
        return NonFiniteMemory()

    def check(self, rank: RankState, memory: NonFiniteMemory) -> list[Finding] | None:
        stats = rank.stats
        if stats is None:
            return None
        skip = set(stats.nograd)
        offenders: list[str] = []
        for column in ("grad_norm", "weight_norm"):
            for i, x in enumerate(rank.fresh(column) or ()):
                if i not in skip and not math.isfinite(x) and rank.names[i] not in offenders:
                    offenders.append(rank.names[i])
        ordered = [n for n in rank.names if n in offenders]
        loss_bad = stats.loss is not None and not math.isfinite(stats.loss)
        global_norm = stats.metrics.get(m.GRAD_NORM)
        grad_bad = global_norm is not None and not finite(global_norm)
        grad_bad = grad_bad or stats.metrics.get(m.NONFINITE_GRADS, 0.0) > 0
        if not (ordered or loss_bad or grad_bad):
            memory.parameter = memory.loss_step = None
            return []
        if loss_bad and memory.loss_step is None:
            memory.loss_step = stats.step
        if memory.parameter is None or memory.parameter not in ordered:
            memory.parameter = ordered[0] if ordered else None
        parts = []
        if loss_bad:
            parts.append(f"loss is {stats.loss}")
        if grad_bad and not ordered:
            parts.append(f"global grad norm is {global_norm}")
        if ordered:
            parts.append(
                f"{len(ordered)} parameter(s) with non-finite gradient or weight: "
                f"{name_list(ordered, self.settings.topk)}"
            )
        if stats.nonfinite:
            parts.append("NaN/Inf gradient elements: " + _counts(rank, stats.nonfinite))
        return [
            self.finding(
                "; ".join(parts),
                parameter=memory.parameter,
                value=float(max(len(ordered), 1)),
                threshold=0.0,
                origin=memory.loss_step is not None,
                claim_step=memory.loss_step,
            )
        ]


def _counts(rank: RankState, pairs: tuple[tuple[int, int], ...]) -> str:
    """``name count/numel`` for the exact counts the agent sent for flagged parameters."""
    numel = [rank.hello.params[i].numel for i in rank.hello.tracked]
    return ", ".join(f"{rank.names[row]} {count}/{numel[row]}" for row, count in pairs[:5])
