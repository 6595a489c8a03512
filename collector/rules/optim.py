"""lr_sanity: learning rates far outside the optimizer's usual range, or sudden jumps."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..state import RankState
from .base import Finding, Rule, RuleSettings, fmt


@dataclass(frozen=True)
class LrSanitySettings(RuleSettings):
    clear_checks: int = 20
    cooldown_seconds: float = 60.0
    warmup_steps: int = 10
    jump: float = 3.0
    """A step-to-step LR change above this factor (up or down) is a jump."""
    jump_floor: float = 0.1
    """Changes of LRs below this fraction of the peak LR are ignored (end of a decay)."""
    muon_min: float = 1e-3
    """Muon's peak LR below this is too low (seed: 1e-3 to 3e-3; AdamW's 3e-4 is a mistake)."""
    muon_max: float = 0.2
    adam_min: float = 1e-6
    """Adam/AdamW's peak LR below this is too low."""
    adam_max: float = 1e-2
    """Adam/AdamW LR above this is too high (seed: 3e-4 to 1e-3 is usual)."""
    sgd_min: float = 1e-5
    sgd_max: float = 10.0


@dataclass
class LrMemory:
    previous: tuple[float, ...] = ()
    factors: tuple[float, ...] = ()
    """Each group's previous change per step: a schedule changes smoothly, a mistake not."""
    step: int = -1
    """Step of ``previous``: frames lost or sampled on the way leave gaps of several steps."""
    peak: float = 0.0


class LrSanity(Rule[LrSanitySettings, LrMemory]):
    """A learning rate outside the usual range for the optimizer, or a sudden jump.

    Ranges by optimizer family (Muon, Adam/AdamW, SGD): the peak LR is compared with the
    minimum once the LR stops rising (warmup over), the current LR with the maximum. A jump
    is a change by more than 3x per step (frames steps apart: per step) after warmup that
    the previous change did not announce (a smooth schedule, even a steep one, is not a
    jump), other than a rise back to at most the peak so far (warmup, a warm restart) or a
    drop to exactly 0 (a freeze: frozen_parameters reports it) (warning). What to do:
    match the LR to the optimizer (Muon 1e-3..3e-3, AdamW 3e-4..1e-3), check the scheduler
    and any code that rewrites ``param_group["lr"]``; ack the alert if the change was planned.
    """

    name = "lr_sanity"
    severity = "error"
    action = (
        "match the LR to the optimizer (Muon ~1e-3..3e-3, AdamW ~3e-4..1e-3); check the "
        "scheduler and code that writes param_group['lr']"
    )
    settings_type = LrSanitySettings

    def new_memory(self) -> LrMemory:
        return LrMemory()

    def bounds(self, optimizer: str) -> tuple[float, float] | None:
        s, kind = self.settings, optimizer.lower()
        if "muon" in kind:
            return s.muon_min, s.muon_max
        if "adam" in kind:
            return s.adam_min, s.adam_max
        if "sgd" in kind:
            return s.sgd_min, s.sgd_max
        return None

    def check(self, rank: RankState, memory: LrMemory) -> list[Finding] | None:
        stats = rank.stats
        if stats is None or not stats.lr or not all(math.isfinite(x) for x in stats.lr):
            return None
        s, lr, before = self.settings, stats.lr, memory.previous
        steps = max(1, stats.step - memory.step) if memory.step >= 0 else 1
        memory.previous, memory.step = lr, stats.step
        prior_peak, memory.peak = memory.peak, max(memory.peak, max(lr))
        found: list[Finding] = []
        limits = self.bounds(rank.hello.optimizer)
        rising = len(before) == len(lr) and max(lr) > max(before)
        if limits is not None:
            low, high = limits
            opt = rank.hello.optimizer
            if max(lr) > high:
                found.append(
                    self.finding(
                        f"learning rate {fmt(max(lr))} is above {fmt(high)}, "
                        f"far too high for {opt}",
                        value=max(lr),
                        threshold=high,
                    )
                )
            elif before and not rising and memory.peak < low:
                found.append(
                    self.finding(
                        f"peak learning rate {fmt(memory.peak)} is below {fmt(low)}, "
                        f"far too low for {opt}",
                        value=memory.peak,
                        threshold=low,
                    )
                )
        factors = tuple(
            (n / o) ** (1 / steps) if o > 0 and n > 0 else 1.0
            for n, o in zip(lr, before, strict=False)
        )
        last_factors, memory.factors = memory.factors, factors
        if not found and len(before) == len(lr):
            for group, (new, old) in enumerate(zip(lr, before, strict=True)):
                if old <= 0 or new == 0 or max(new, old) < s.jump_floor * memory.peak:
                    continue  # an lr of exactly 0 is a freeze: frozen_parameters says so
                factor, per_step = new / old, factors[group]
                if factor > 1 and new <= prior_peak * 1.01:
                    continue  # back up to where it was: warmup, or a warm restart
                smooth = per_step / (last_factors[group] if len(last_factors) == len(lr) else 1.0)
                abrupt = smooth > s.jump or smooth < 1 / s.jump
                if abrupt and (per_step > s.jump or per_step < 1 / s.jump):
                    span = "one step" if steps == 1 else f"{steps} steps"
                    found.append(
                        self.finding(
                            f"learning rate of group {group} changed {factor:.3g}x in {span} "
                            f"({fmt(old)} -> {fmt(new)})",
                            value=new,
                            threshold=old * (s.jump if factor > 1 else 1 / s.jump),
                            severity="warning",
                        )
                    )
                    break
        return found
