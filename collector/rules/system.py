"""System rules: throughput_drop, step_time_increase, memory_pressure, memory_growth,
trainer_silent."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from gradwatch.wire import metrics as m

from ..state import RankState
from .base import (
    Finding,
    Rule,
    RuleSettings,
    Streak,
    SustainedSettings,
    fmt,
    median,
    metric,
)


@dataclass(frozen=True)
class SlowdownSettings(SustainedSettings):
    warmup_steps: int = 10
    ratio: float = 0.5
    """Fraction of the running median below (throughput) or multiple above (step time)."""
    window: int = 50
    """Frames in the running median."""
    min_history: int = 10
    """Frames needed before judging."""
    recent: int = 7
    """The median of this many latest frames is compared (single slow steps are jitter)."""
    min_delta: float = 0.0
    """Ignore changes smaller than this in absolute terms (seconds for step time)."""


@dataclass
class SeriesMemory:
    values: deque[float] = field(default_factory=deque)
    recent: deque[tuple[int, float]] = field(default_factory=deque)
    """(step, value) of the latest frames."""
    streak: Streak = field(default_factory=Streak)


class ThroughputDrop(Rule[SlowdownSettings, SeriesMemory]):
    """Tokens per second fell below half of the running median, and stayed there.

    The median of the last ``recent`` frames is compared, so one slow step is not a drop, and
    the drop must last ``for_seconds`` and ``for_steps`` (whichever is longer) before it is
    reported, with the step it began as the onset: a scheduler hiccup of tiny steps on a busy
    machine is not a slowdown. What to do: look for a slow data loader, another job on the
    device, thermal throttling, host memory swapping, or a new synchronisation (``.item()``,
    logging) in the loop.
    """

    name = "throughput_drop"
    severity = "warning"
    action = "check the data loader, device contention, throttling and new host syncs"
    settings_type = SlowdownSettings
    key = m.TOKENS_PER_SECOND

    def new_memory(self) -> SeriesMemory:
        s = self.settings
        return SeriesMemory(deque(maxlen=s.window), deque(maxlen=s.recent))

    def bad(self, value: float, typical: float) -> tuple[bool, float]:
        limit = self.settings.ratio * typical
        return value < limit and typical - value >= self.settings.min_delta, limit

    def check(self, rank: RankState, memory: SeriesMemory) -> list[Finding] | None:
        value = metric(rank, self.key)
        if value is None or not math.isfinite(value) or rank.stats is None:
            return None
        s, step, when = self.settings, rank.stats.step, rank.stats.time
        memory.recent.append((step, value))
        if len(memory.values) < s.min_history:
            memory.values.append(value)
            return []
        typical = median(memory.values)
        bad, limit = self.bad(median(v for _, v in memory.recent), typical)
        # The drop began at the first slow frame of the recent window that made its median slow.
        onset = next((k for k, v in memory.recent if self.bad(v, typical)[0]), step)
        memory.streak.update(bad, step, when, onset)
        if not bad:
            memory.values.append(value)
            return []
        if not memory.streak.held(s, step, when):
            return []
        return [
            self.finding(
                f"{self.key} {fmt(value)} vs running median {fmt(typical)} since step "
                f"{memory.streak.onset}",
                value=value,
                threshold=limit,
                onset=memory.streak.onset,
            )
        ]


@dataclass(frozen=True)
class StepTimeSettings(SlowdownSettings):
    ratio: float = 2.0
    min_delta: float = 0.01


class StepTimeIncrease(ThroughputDrop):
    """Step time rose above twice its running median, and stayed there.

    Sustained like throughput_drop; small absolute changes (< ``min_delta`` seconds) are
    ignored so that tiny CPU steps do not flap. What to do: same as throughput_drop; compare
    with the data-loading time.
    """

    name = "step_time_increase"
    settings_type = StepTimeSettings
    key = m.STEP_TIME

    def bad(self, value: float, typical: float) -> tuple[bool, float]:
        limit = self.settings.ratio * typical
        return value > limit and value - typical >= self.settings.min_delta, limit


@dataclass(frozen=True)
class MemoryPressureSettings(RuleSettings):
    for_checks: int = 3
    ratio: float = 0.95
    """Fraction of the device (or host) memory in use."""


def memory_used(rank: RankState) -> float | None:
    """Allocated device memory when reported, else the process RSS."""
    value = metric(rank, m.MEMORY_ALLOCATED)
    return metric(rank, m.RSS) if value is None else value


class MemoryPressure(Rule[MemoryPressureSettings, None]):
    """Memory in use above 95% of the device's (or the host's) capacity: an OOM is near.

    What to do: lower the micro-batch size, enable activation checkpointing, look for tensors
    kept alive across steps.
    """

    name = "memory_pressure"
    severity = "warning"
    action = "lower the micro-batch, enable activation checkpointing, free cached tensors"
    settings_type = MemoryPressureSettings

    def new_memory(self) -> None:
        return None

    def check(self, rank: RankState, memory: None) -> list[Finding] | None:
        used, total = memory_used(rank), metric(rank, m.MEMORY_TOTAL)
        if used is None or not total or not math.isfinite(used):
            return None
        limit = self.settings.ratio * total
        if used <= limit:
            return []
        msg = f"{used / total:.1%} of {total / 2**30:.1f} GiB memory in use"
        return [self.finding(msg, value=used / total, threshold=self.settings.ratio)]


@dataclass(frozen=True)
class MemoryGrowthSettings(SustainedSettings):
    warmup_steps: int = 20
    window: int = 20
    """Frames in the robust fit of memory against steps."""
    min_growth_bytes: float = 16 * 2**20
    """Least growth the fitted slope predicts over the window, in bytes..."""
    min_growth_ratio: float = 0.02
    """...and as a fraction of the memory in use."""


@dataclass
class GrowthMemory:
    points: deque[tuple[int, float]] = field(default_factory=deque)
    """(step, bytes) of the latest frames."""
    streak: Streak = field(default_factory=Streak)


def theil_sen_slope(points: Sequence[tuple[int, float]]) -> float:
    """The median of the pairwise slopes: a line fit that a few jumps or plateaus (an
    allocator growing its pool once) do not move, unlike least squares."""
    slopes = [
        (b - a) / (j - i) for k, (i, a) in enumerate(points) for j, b in points[k + 1 :] if j != i
    ]
    return median(slopes) if slopes else 0.0


class MemoryGrowth(Rule[MemoryGrowthSettings, GrowthMemory]):
    """Memory (allocated device memory, else RSS) keeps rising step after step: a leak.

    A robust (Theil-Sen) fit of memory against steps over the last ``window`` frames must
    predict growth of ``min_growth_bytes`` and ``min_growth_ratio`` across the window, for
    ``for_seconds`` and ``for_steps`` (whichever is longer). One allocator jump followed by a
    plateau fits a flat line and is not a leak. What to do: look for tensors appended to a list
    each step (losses kept with their graph: use ``loss.item()``/``.detach()``), growing
    caches, or hooks holding references.
    """

    name = "memory_growth"
    severity = "warning"
    action = "look for per-step tensors kept alive (store loss.item(), not loss), growing caches"
    settings_type = MemoryGrowthSettings

    def new_memory(self) -> GrowthMemory:
        return GrowthMemory(deque(maxlen=self.settings.window))

    def check(self, rank: RankState, memory: GrowthMemory) -> list[Finding] | None:
        value = memory_used(rank)
        if value is None or not math.isfinite(value) or rank.stats is None:
            return None
        s, step, when, points = self.settings, rank.stats.step, rank.stats.time, memory.points
        points.append((step, value))
        if len(points) < s.window:
            return []
        first, last = points[0][0], points[-1][0]
        slope = theil_sen_slope(list(points))
        growth = slope * (last - first)
        bad = growth >= s.min_growth_bytes and growth >= s.min_growth_ratio * points[0][1]
        if bad and memory.streak.onset < 0:
            # The leak began after the last frame still near the window's lowest memory.
            floor = min(v for _, v in points) + 0.1 * growth
            onset = next((k for k, v in reversed(points) if v <= floor), first)
            memory.streak.update(bad, step, when, onset + 1 if onset < step else onset)
        memory.streak.update(bad, step, when)
        if not bad or not memory.streak.held(s, step, when):
            return []
        base = points[0][1]
        share = f"{growth / base:.1%}" if base > 0 else f"from {fmt(base)} bytes"
        return [
            self.finding(
                f"memory grows {fmt(slope / 2**20)} MiB per step since step {memory.streak.onset}: "
                f"{growth / 2**20:.0f} MiB ({share}) over the last {last - first} steps",
                value=value,
                threshold=points[0][1] + s.min_growth_bytes,
                onset=memory.streak.onset,
            )
        ]


@dataclass(frozen=True)
class SilentSettings(RuleSettings):
    clear_checks: int = 1
    cooldown_seconds: float = 0.0
    seconds: float = 30.0
    """No frame at all, not even a heartbeat, for this long: the process is gone (agents that
    send heartbeats from their own thread)."""
    factor: float = 10.0
    """Older agents (frames only from the training thread, no phases): silence longer than this
    many typical frame intervals..."""
    floor_seconds: float = 60.0
    """...and longer than this (a long evaluation is silence too there)."""

    def limit(self, rank: RankState) -> float:
        """Seconds of silence after which the rank counts as gone (also when another process
        may take its run and rank over, see duplicate_rank)."""
        if rank.heartbeats:
            return self.seconds
        return max(self.factor * (rank.typical_interval() or 0.0), self.floor_seconds)


class TrainerSilent(Rule[SilentSettings, None]):
    """No frame from a rank, not even a heartbeat, for ``seconds`` without a ``bye``: the
    process is gone (killed, segfault, node lost) or its network is.

    Agents send heartbeats from their own thread whatever training does, so a rank that is
    alive but stuck raises rank_stalled instead. Judged on the collector's clock; ranks that
    go silent together are one alert. (Older agents without phase heartbeats: max(``factor``
    x the typical frame interval, ``floor_seconds``).) What to do: check the process exists
    (``ps``, the scheduler, ``dmesg`` for the OOM killer), the node, and the network to the
    collector.
    """

    name = "trainer_silent"
    severity = "error"
    action = "check the process and node (scheduler, dmesg OOM killer) and the network"
    settings_type = SilentSettings

    def new_memory(self) -> None:
        return None

    def tick(self, rank: RankState, memory: None, now: float) -> list[Finding] | None:
        if rank.ended:
            return []
        limit = self.settings.limit(rank)
        silence = now - rank.last_seen
        if silence <= limit:
            return []
        last = f" in {rank.phase}" if rank.phase else ""
        return [
            self.finding(
                f"no frame, not even a heartbeat, for {silence:.0f} s (limit {limit:.0f} s) "
                f"after step {rank.last_step}{last}, host {rank.hello.host} pid "
                f"{rank.hello.pid}: the process is gone or unreachable",
                value=silence,
                threshold=limit,
            )
        ]
