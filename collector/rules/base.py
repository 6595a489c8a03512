"""What every rule shares: settings, findings, and the rule interface."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import ClassVar, Generic, Literal, TypeVar

from gradwatch.wire import ACTIONS

from ..alert import Severity
from ..health import IngestHealth
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
    action: str = "notify"
    """What every rank of the run is asked to do when this rule's alert fires: ``notify``
    (nothing but the alert), ``stop`` (end training) or ``checkpoint`` (save one and go on);
    sent back over the agents' own connection. An agent's ``on_alert`` overrides it."""

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"action must be one of {ACTIONS}, got {self.action!r}")
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
    onset: int | None = None
    """Step at which the condition began, when the rule waited before reporting it (a streak,
    a window); the alert's ``first_step``. None: the step of the frame that raised it."""
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
    ``tick_collector`` runs on the clock once for the collector itself.

    Each returns a list of findings (empty: the condition is clear, on every rank) or None (no
    judgement this time, e.g. not a full step), so that the book only counts real checks.
    Values may be any float64 (NaN, Inf, 1e308): a rule must not raise on them.
    """

    name: ClassVar[str]
    severity: ClassVar[Severity]
    action: ClassVar[str]
    settings_type: ClassVar[type[RuleSettings]]
    scope: ClassVar[Literal["rank", "run"]] = "rank"
    sheddable: ClassVar[bool] = False
    """``check`` reads per-parameter columns or a trend over many frames: when ingest is
    behind it judges each rank's newest frame (and every full step) only. The others (a single
    frame's loss, NaN, learning rate or gradient norm matters) judge every frame."""
    collector_settings: ClassVar[tuple[str, ...]] = ()
    """Fields of ``CollectorConfig`` (flags) that this rule reports on (docs/rules.md)."""

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

    def tick_collector(self, health: IngestHealth, memory: M, now: float) -> list[Finding] | None:
        """Judge the collector itself on its clock (collector-level rules only); findings
        become alerts of run ``COLLECTOR_RUN``, rank ``COLLECTOR_RANK``."""
        return None

    def finding(
        self,
        message: str,
        *,
        parameter: str | None = None,
        value: float | None = None,
        threshold: float | None = None,
        severity: Severity | None = None,
        onset: int | None = None,
        rank: int | None = None,
        step: int | None = None,
        origin: bool = False,
        claim_step: int | None = None,
    ) -> Finding:
        return Finding(
            self.name, parameter, value, threshold, message, self.action, severity, onset,
            rank, step, origin, claim_step,
        )  # fmt: skip


@dataclass(frozen=True)
class SustainedSettings(RuleSettings):
    """Settings of rules about rates and durations, which must hold a while before they fire."""

    for_seconds: float = 60.0
    """The condition must hold this long (wall time between the frames' own clocks)..."""
    for_steps: int = 20
    """...and over at least this many steps, whichever is longer: slow steps of a busy machine
    and scheduler hiccups of tiny steps are not trends."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.for_seconds < 0 or self.for_steps < 0:
            raise ValueError("for_seconds and for_steps must not be negative")


@dataclass
class Streak:
    """A condition that holds from frame to frame: when it was first seen, and where it began."""

    onset: int = -1
    """Step at which the condition began (-1: it does not hold)."""
    since_step: int = -1
    """Step at which it was first seen to hold (a window may see it after its onset)."""
    since_time: float = 0.0
    """Frame time of that step."""

    def update(self, bad: bool, step: int, time: float, onset: int | None = None) -> None:
        """Extend the streak while ``bad`` (it began at ``onset``, default this step), or end
        it."""
        if not bad:
            self.onset = -1
        elif self.onset < 0:
            self.onset = step if onset is None else min(onset, step)
            self.since_step, self.since_time = step, time

    def held(self, s: SustainedSettings, step: int, time: float) -> bool:
        """True once it has held for ``for_seconds`` and ``for_steps`` since first seen."""
        return (
            self.onset >= 0
            and step - self.since_step >= s.for_steps
            and time - self.since_time >= s.for_seconds
        )


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


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and population standard deviation of finite ``values``, for any float64 magnitude
    (``statistics.fmean`` overflows at 1e308: the values are scaled into range first)."""
    if not values:
        raise ValueError("mean of nothing")
    scale = max(abs(v) for v in values) or 1.0
    scaled = [v / scale for v in values]
    mid = math.fsum(scaled) / len(scaled)
    var = math.fsum((x - mid) * (x - mid) for x in scaled) / len(scaled)
    return mid * scale, math.sqrt(var) * scale


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


def metric(rank: RankState, key: str) -> float | None:
    stats = rank.stats
    return None if stats is None else stats.metrics.get(key)


def sticky(previous: str | None, candidates: Sequence[str]) -> str | None:
    """Keep naming ``previous`` while it is still a candidate, so the alert keeps its identity."""
    if previous is not None and previous in candidates:
        return previous
    return candidates[0] if candidates else None
