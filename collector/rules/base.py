"""What every rule shares: settings, findings, and the rule interface."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import ClassVar, Generic, Literal, TypeVar

from ..alert import Severity
from ..state import RankState, RunState, StepRanks


@dataclass(frozen=True)
class RuleSettings:
    """Lifecycle settings every rule has; a rule's own thresholds extend this."""

    enabled: bool = True
    """False turns the rule off."""
    for_checks: int = 1
    """Checks the condition must hold before the alert fires (pending until then)."""
    clear_checks: int = 3
    """Checks the condition must be gone before the alert resolves."""
    cooldown_seconds: float = 300.0
    """After a resolve, the same alert may not fire again for this long."""
    warmup_steps: int = 0
    """Findings are suppressed for this many steps after the rank's first frame."""

    def __post_init__(self) -> None:
        if self.for_checks < 0 or self.clear_checks < 1:
            raise ValueError("for_checks must be >= 0 and clear_checks >= 1")
        if self.cooldown_seconds < 0 or self.warmup_steps < 0:
            raise ValueError("cooldown_seconds and warmup_steps must not be negative")


@dataclass(frozen=True)
class Finding:
    """One condition a rule saw on one rank; the alert book turns it into an alert (findings of
    one rule on several ranks of a run for the same parameter join one alert)."""

    rule: str
    parameter: str | None
    value: float | None
    threshold: float | None
    message: str
    action: str
    severity: Severity | None = None
    """Overrides the rule's severity (e.g. loss_spike: error for 10x, warning for a z-score)."""
    rank: int | None = None
    """The rank it is about: set by run-level rules (a missing rank has no state of its own);
    None for per-rank rules, whose findings are about the rank judged."""
    step: int | None = None
    """The step it is about when not the rank's latest (a cross-rank comparison of one step)."""
    origin: bool = False
    """This rank is where the condition started, not a rank it reached through a collective
    (its own loss went non-finite, its own exception, a hang's culprit): the job's alert names
    it as its ``rank``. Among per-rank findings the earliest ``claim_step`` wins."""
    claim_step: int | None = None
    """For an ``origin``: the step the condition started at on this rank (default: the step
    of the check); the rank with the earliest claim is the origin."""


S = TypeVar("S", bound=RuleSettings)
M = TypeVar("M")


class Rule(Generic[S, M]):
    """An anomaly rule. Per-rank rules (``scope = "rank"``): ``check`` runs on every stats frame
    of a rank, ``tick`` on the collector's clock, with memory per rank. Run-level rules
    (``scope = "run"``) judge all ranks of a run together, with memory per run: ``check_run``
    on the clock and when a rank says hello or bye, ``check_step`` once every live rank has
    reported a step (or it can no longer be completed); their findings name their ``rank``.

    Each returns a list of findings (empty: the condition is clear, on every rank) or None (no
    judgement this time, e.g. not a full step), so that the book only counts real checks.
    """

    name: ClassVar[str]
    severity: ClassVar[Severity]
    action: ClassVar[str]
    settings_type: ClassVar[type[RuleSettings]]
    scope: ClassVar[Literal["rank", "run"]] = "rank"

    def __init__(self, settings: S) -> None:
        self.settings = settings

    def new_memory(self) -> M:
        """Fresh per-rank memory (moving averages, counters)."""
        raise NotImplementedError

    def check(self, rank: RankState, memory: M) -> list[Finding] | None:
        """Judge the rank's latest stats frame."""
        return None

    def tick(self, rank: RankState, memory: M, now: float) -> list[Finding] | None:
        """Judge the rank on the collector's clock (time-based rules only)."""
        return None

    def check_run(self, run: RunState, memory: M, now: float) -> list[Finding] | None:
        """Judge every rank of a run together (run-level rules): on the collector's clock and
        when a rank says hello or bye."""
        return None

    def check_step(
        self, run: RunState, step: StepRanks, memory: M, now: float
    ) -> list[Finding] | None:
        """Compare the ranks' stats frames of one step (run-level rules)."""
        return None

    def finding(
        self,
        message: str,
        *,
        parameter: str | None = None,
        value: float | None = None,
        threshold: float | None = None,
        severity: Severity | None = None,
        rank: int | None = None,
        step: int | None = None,
        origin: bool = False,
        claim_step: int | None = None,
    ) -> Finding:
        return Finding(
            self.name, parameter, value, threshold, message, self.action, severity,
            rank, step, origin, claim_step,
        )  # fmt: skip


# ----------------------------------------------------------------------------- helpers


def finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def median(values: Iterable[float]) -> float:
    ordered = sorted(values)
    n = len(ordered)
    if not n:
        raise ValueError("median of nothing")
    mid = n // 2
    return ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def fmt(x: float | None) -> str:
    """Short human form of a number."""
    if x is None:
        return "n/a"
    if not math.isfinite(x) or x == 0:
        return str(x)
    return f"{x:.3g}" if 1e-3 <= abs(x) < 1e4 else f"{x:.2e}"


def name_list(names: Sequence[str], k: int) -> str:
    shown = ", ".join(names[:k])
    return shown + (f" (+{len(names) - k} more)" if len(names) > k else "")


_LAYER = re.compile(r"(?:^|\.)(?:blocks|layers|layer|h|block)\.(\d+)\.")


def layer_index(name: str) -> int | None:
    """The block number in ``blocks.3.attn.weight``-style names, else None."""
    match = _LAYER.search(name)
    return int(match.group(1)) if match else None


def metric(rank: RankState, key: str) -> float | None:
    stats = rank.stats
    return None if stats is None else stats.metrics.get(key)


def sticky(previous: str | None, candidates: Sequence[str]) -> str | None:
    """Keep naming ``previous`` while it is still a candidate, so the alert keeps its identity."""
    if previous is not None and previous in candidates:
        return previous
    return candidates[0] if candidates else None
