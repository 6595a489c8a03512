"""System rules: throughput_drop, step_time_increase, memory_pressure, memory_growth,
trainer_silent."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from gradwatch.wire import metrics as m

from ..state import RankState
from .base import Finding, Rule, RuleSettings, fmt, median, metric


@dataclass(frozen=True)
class SlowdownSettings(RuleSettings):
    for_checks: int = 4
    warmup_steps: int = 10
    ratio: float = 0.5
    """Fraction of the running median below (throughput) or multiple above (step time)."""
    window: int = 50
    """Frames in the running median."""
    min_history: int = 10
    recent: int = 7
    """The median of this many latest frames is compared (single slow steps are jitter)."""
    min_delta: float = 0.0
    """Ignore changes smaller than this in absolute terms (seconds for step time)."""


@dataclass
class SeriesMemory:
    values: deque[float] = field(default_factory=deque)
    recent: deque[float] = field(default_factory=deque)


class ThroughputDrop(Rule[SlowdownSettings, SeriesMemory]):
    """Tokens per second fell below half of the running median, for a few frames.

    The median of the last ``recent`` frames is compared, so one slow step is not a drop.

    What to do: look for a slow data loader, another job on the device, thermal throttling,
    host memory swapping, or a new synchronisation (``.item()``, logging) in the loop.
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
        if value is None or not math.isfinite(value):
            return None
        memory.recent.append(value)
        if len(memory.values) < self.settings.min_history:
            memory.values.append(value)
            return []
        typical = median(memory.values)
        bad, limit = self.bad(median(memory.recent), typical)
        if not bad:
            memory.values.append(value)
            return []
        return [
            self.finding(
                f"{self.key} {fmt(value)} vs running median {fmt(typical)}",
                value=value,
                threshold=limit,
            )
        ]


@dataclass(frozen=True)
class StepTimeSettings(SlowdownSettings):
    ratio: float = 2.0
    min_delta: float = 0.01


class StepTimeIncrease(ThroughputDrop):
    """Step time rose above twice its running median, for a few frames.

    Small absolute changes (< ``min_delta`` seconds) are ignored so that tiny CPU steps do not
    flap. What to do: same as throughput_drop; compare with the data-loading time.
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
class MemoryGrowthSettings(RuleSettings):
    warmup_steps: int = 20
    window: int = 10
    """Frames over which memory must keep rising."""
    min_growth_ratio: float = 0.02
    """Growth over the window, as a fraction of the first value."""
    min_growth_bytes: float = 16 * 2**20
    """And in bytes."""
    rising_frac: float = 0.8
    """Fraction of frame-to-frame changes that must be increases."""


class MemoryGrowth(Rule[MemoryGrowthSettings, SeriesMemory]):
    """Memory (allocated device memory, else RSS) rises steadily frame after frame: a leak.

    What to do: look for tensors appended to a list each step (losses kept with their
    graph: use ``loss.item()``/``.detach()``), growing caches, or hooks holding references.
    """

    name = "memory_growth"
    severity = "warning"
    action = "look for per-step tensors kept alive (store loss.item(), not loss), growing caches"
    settings_type = MemoryGrowthSettings

    def new_memory(self) -> SeriesMemory:
        return SeriesMemory(deque(maxlen=self.settings.window))

    def check(self, rank: RankState, memory: SeriesMemory) -> list[Finding] | None:
        value = memory_used(rank)
        if value is None or not math.isfinite(value):
            return None
        s, values = self.settings, memory.values
        values.append(value)
        if len(values) < s.window:
            return []
        seq = list(values)
        growth = seq[-1] - seq[0]
        rising = sum(b > a for a, b in zip(seq, seq[1:], strict=False))
        if (
            rising >= s.rising_frac * (len(seq) - 1)
            and growth >= s.min_growth_bytes
            and growth >= s.min_growth_ratio * seq[0]
        ):
            share = f"{growth / seq[0]:.1%}" if seq[0] > 0 else f"from {fmt(seq[0])} bytes"
            return [
                self.finding(
                    f"memory grew {growth / 2**20:.0f} MiB ({share}) over the last "
                    f"{len(seq)} frames, {fmt(growth / (len(seq) - 1) / 2**20)} MiB per frame",
                    value=value,
                    threshold=seq[0] * (1 + s.min_growth_ratio),
                )
            ]
        return []


@dataclass(frozen=True)
class SilentSettings(RuleSettings):
    clear_checks: int = 1
    cooldown_seconds: float = 0.0
    factor: float = 10.0
    """Silence longer than this many typical frame intervals..."""
    floor_seconds: float = 60.0
    """...and longer than this is a hang or a crash."""

    def limit(self, rank: RankState) -> float:
        """Seconds of silence after which the rank counts as hung or dead (also when another
        process may take its run and rank over, see duplicate_rank)."""
        return max(self.factor * (rank.typical_interval() or 0.0), self.floor_seconds)


class TrainerSilent(Rule[SilentSettings, None]):
    """No frame from a rank for max(10x its typical interval, 60 s) without a ``bye``.

    Judged on the collector's clock. The process hung (deadlock, stuck collective, data
    loader) or died without saying goodbye. What to do: check the process is alive
    (``py-spy dump``), look at NCCL timeouts and the other ranks, and the job's logs.
    """

    name = "trainer_silent"
    severity = "error"
    action = "check the process (py-spy dump), other ranks, collective timeouts and job logs"
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
        return [
            self.finding(
                f"no frame for {silence:.0f} s (limit {limit:.0f} s) after step {rank.last_step}",
                value=silence,
                threshold=limit,
            )
        ]
