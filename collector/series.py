"""Per-rank history of a few metrics for the page's charts: bounded, downsampled, cheap to feed.

Each (run, rank) keeps one :class:`Track` per metric it has sent. A track holds at most
``BUCKETS`` buckets of ``width`` consecutive samples; when all are full, neighbours merge and
``width`` doubles, so memory per rank is fixed whatever the length of the run. A bucket keeps
its minimum and its maximum with their exact steps (spikes survive any amount of merging) and
the first step whose value was NaN/Inf. The value at the step an alert opened is pinned (up to
``PINS`` per track), so the point under each alert marker is the exact sample.

Fed by the ingest thread (:meth:`SeriesStore.observe`, one call per frame, before the rules
judge it; :meth:`SeriesStore.on_alert` as an alert-book listener); read by the API.
"""

from __future__ import annotations

import math
import threading
from array import array
from typing import Literal

from pydantic import BaseModel, Field

from gradwatch.wire import Frame, Stats
from gradwatch.wire.metrics import (
    GRAD_NORM,
    MEMORY_ALLOCATED,
    METRICS,
    RSS,
    SAMPLES_PER_SECOND,
    STEP_TIME,
    TOKENS_PER_SECOND,
)

from .alert import Alert
from .fleet import Fleet
from .state import RankState

LOSS = "loss"
LR = "lr"
SeriesMetric = Literal[
    "loss", "lr", "grad_norm", "tokens_per_second", "samples_per_second", "step_time_seconds",
    "memory_allocated_bytes", "rss_bytes",
]  # fmt: skip
"""The names of :data:`SERIES` as a type, for the API's validation and schema (a test checks
that both agree)."""
_FRAME_METRICS = (
    GRAD_NORM, TOKENS_PER_SECOND, SAMPLES_PER_SECOND, STEP_TIME, MEMORY_ALLOCATED, RSS,
)  # fmt: skip
SERIES: dict[str, str] = {
    LOSS: "training loss (the frame's loss)",
    LR: "learning rate of the first parameter group",
    **{key: METRICS[key] for key in _FRAME_METRICS},
}
"""Every metric with a history, with what it is: ``metric=`` of ``GET /runs/{run}/series``."""

BUCKETS = 128
"""Buckets per track (even): a chart gets at most two points per bucket, plus NaN marks and pins."""
PINS = 16
"""Exact samples kept per track at the steps where alerts opened (the oldest go first)."""

_FIELDS = 5  # per bucket: min value, its step, max value, its step, first non-finite step
_EMPTY = (math.inf, -1.0, -math.inf, -1.0, -1.0)


class Track:
    """One metric of one rank: fixed memory (``buckets`` x 5 doubles plus pins)."""

    __slots__ = ("buckets", "width", "used", "fill", "data", "pins", "last_step", "last_value")

    def __init__(self, buckets: int = BUCKETS) -> None:
        if buckets < 2 or buckets % 2:
            raise ValueError(f"buckets must be even and at least 2, got {buckets}")
        self.buckets = buckets
        self.width = 1
        """Samples per bucket (a power of two)."""
        self.used = 0
        self.fill = 0
        self.data = array("d", _EMPTY * buckets)
        self.pins: list[tuple[int, float]] = []
        self.last_step = -1
        self.last_value = math.nan

    def add(self, step: int, value: float) -> None:
        """One sample (steps rising)."""
        d = self.data
        if self.fill == self.width or self.used == 0:
            if self.used == self.buckets:
                self._merge()
            i = self.used * _FIELDS
            d[i], d[i + 1], d[i + 2], d[i + 3], d[i + 4] = _EMPTY
            self.used += 1
            self.fill = 1
        else:
            i = (self.used - 1) * _FIELDS
            self.fill += 1
        self.last_step, self.last_value = step, value
        if value - value == 0.0:  # finite (NaN and Inf give NaN)
            if value < d[i]:
                d[i], d[i + 1] = value, step
            if value > d[i + 2]:
                d[i + 2], d[i + 3] = value, step
        elif d[i + 4] < 0:
            d[i + 4] = step

    def _merge(self) -> None:
        """Every pair of neighbouring buckets becomes one; ``width`` doubles."""
        d = self.data
        for b in range(self.buckets // 2):
            a, c = 2 * b * _FIELDS, (2 * b + 1) * _FIELDS
            lo = a if d[a] <= d[c] else c
            hi = a if d[a + 2] >= d[c + 2] else c
            bad = d[a + 4] if d[a + 4] >= 0 else d[c + 4]
            o = b * _FIELDS
            d[o : o + _FIELDS] = array("d", (d[lo], d[lo + 1], d[hi + 2], d[hi + 3], bad))
        self.used = self.buckets // 2
        self.width *= 2

    def pin(self, step: int) -> None:
        """Keep the sample of ``step`` exactly, if it is the latest one."""
        if step != self.last_step or (self.pins and self.pins[-1][0] == step):
            return
        self.pins.append((step, self.last_value))
        if len(self.pins) > PINS:
            del self.pins[0]

    def points(self) -> tuple[list[int], list[float | None]]:
        """Steps (rising) and values (None: NaN/Inf at that step)."""
        d = self.data
        found: dict[int, float | None] = {}
        for b in range(self.used):
            i = b * _FIELDS
            if d[i + 1] >= 0:
                found[int(d[i + 1])] = d[i]
                found[int(d[i + 3])] = d[i + 2]
            if d[i + 4] >= 0:
                found[int(d[i + 4])] = None
        for step, value in self.pins:
            found[step] = value if math.isfinite(value) else None
        steps = sorted(found)
        return steps, [found[s] for s in steps]


class MetricSeries(BaseModel):
    """One metric's history: columns of equal length, steps rising."""

    steps: list[int]
    values: list[float | None] = Field(description="null where the value was NaN or Inf")
    samples_per_bucket: int = Field(
        description="How many samples each bucket spans (1: every sample is here)"
    )
    last_step: int = Field(description="Step of the latest sample")
    last_value: float | None = Field(description="The latest sample (null: NaN or Inf)")


class RankHistory(BaseModel):
    """``GET /runs/{run}/series``: the history of one rank, per metric."""

    run: str
    rank: int
    last_step: int
    metrics: dict[str, MetricSeries] = Field(
        description="Each metric asked for that this rank has sent (others are left out)"
    )


class _Rank:
    __slots__ = ("last_step", "tracks")

    def __init__(self) -> None:
        self.last_step = -1
        self.tracks: dict[str, Track] = {}


def values_of(stats: Stats) -> list[tuple[str, float | None]]:
    """Each history metric's value in a stats frame (None: not sent)."""
    get = stats.metrics.get
    lr = stats.lr[0] if stats.lr else None
    return [(LOSS, stats.loss), (LR, lr), *((k, get(k)) for k in _FRAME_METRICS)]


class SeriesStore:
    """The histories of every live rank; forgets those the fleet forgot."""

    def __init__(self, fleet: Fleet, buckets: int = BUCKETS) -> None:
        Track(buckets)  # validates
        self.fleet = fleet
        self.buckets = buckets
        self._ranks: dict[tuple[str, int], _Rank] = {}
        self._lock = threading.Lock()

    def observe(self, state: RankState, frame: Frame) -> None:
        """Ingest thread, per frame: add a stats frame's values (a step that goes back, as
        after a restart from a checkpoint, starts the rank's history anew)."""
        if not isinstance(frame, Stats):
            return
        key = (state.run, state.rank)
        with self._lock:
            rank = self._ranks.get(key)
            if rank is None or frame.step <= rank.last_step:
                if rank is None:
                    self._prune()
                rank = self._ranks[key] = _Rank()
            step = rank.last_step = frame.step
            tracks = rank.tracks
            for name, value in values_of(frame):
                if value is not None:
                    track = tracks.get(name)
                    if track is None:
                        track = tracks[name] = Track(self.buckets)
                    track.add(step, value)

    def _prune(self) -> None:
        gone = [k for k in self._ranks if self.fleet.rank(*k) is None]
        for key in gone:
            del self._ranks[key]

    def on_alert(self, alert: Alert) -> None:
        """Alert-book listener: pin each metric's sample at the step where an alert opens."""
        if alert.state == "resolved":
            return
        with self._lock:
            rank = self._ranks.get((alert.run, alert.rank))
            if rank is not None:
                for track in rank.tracks.values():
                    track.pin(alert.first_step)

    def ranks(self) -> int:
        """How many ranks have a history."""
        return len(self._ranks)

    def read(self, run: str, rank: int, metrics: list[str]) -> RankHistory | None:
        """The history of ``metrics`` for one rank; None if the rank has none."""
        with self._lock:
            got = self._ranks.get((run, rank))
            if got is None:
                return None
            out: dict[str, MetricSeries] = {}
            for name in metrics:
                track = got.tracks.get(name)
                if track is not None:
                    steps, values = track.points()
                    last = track.last_value
                    out[name] = MetricSeries(
                        steps=steps,
                        values=values,
                        samples_per_bucket=track.width,
                        last_step=track.last_step,
                        last_value=last if math.isfinite(last) else None,
                    )
            return RankHistory(run=run, rank=rank, last_step=got.last_step, metrics=out)
