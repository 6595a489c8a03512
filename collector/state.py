"""Per-run, per-rank state built from decoded frames: the latest statistics by name."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from gradwatch.wire import (
    Bye,
    Frame,
    Heartbeat,
    Hello,
    Stats,
    WireError,
    check_shape,
    unpack_columns,
)


@dataclass
class RankState:
    """What the collector knows about one rank of one run."""

    run: str
    rank: int
    hello: Hello
    first_seen: float
    """Collector wall clock (``time.time()``) at the first frame of this session."""
    last_seen: float
    """Collector wall clock at the latest frame of any kind."""
    names: tuple[str, ...] = ()
    """Names of the tracked parameters, in the order of the stats rows."""
    last_step: int = -1
    first_step: int = -1
    """Step of the first stats/heartbeat frame of this session (for warmups); -1 before."""
    stats: Stats | None = None
    """The latest stats frame."""
    columns: dict[str, list[float]] = field(default_factory=dict)
    """Latest cheap per-parameter columns (``wire.CHEAP_FIELDS`` names), tracked order."""
    full_columns: dict[str, list[float]] = field(default_factory=dict)
    """Latest full per-parameter columns (``wire.FULL_FIELDS`` names), tracked order."""
    full_metrics: dict[str, float] = field(default_factory=dict)
    """Frame-level metrics of the latest full step (the gradient percentiles travel only there)."""
    full_step: int = -1
    """Step of ``full_columns``; -1 before the first full step."""
    frames: int = 0
    dropped: int = 0
    """Frames the agent reports it could not send (cumulative)."""
    ended: bool = False
    """A bye arrived; the rank is done and not expected to send more."""
    intervals: deque[float] = field(default_factory=lambda: deque(maxlen=64))
    """Recent wall-clock seconds between frames, for judging silence."""
    untracked: dict[str, int] = field(default_factory=dict)
    """Parameters whose ``requires_grad`` was turned off mid-run (the agent re-announced its
    table without them), with the last step they were tracked at."""

    @property
    def frozen_by_design(self) -> tuple[str, ...]:
        """Parameters the user froze on purpose (requires_grad=False): never a problem."""
        off = self.untracked
        return tuple(p.name for p in self.hello.params if not p.requires_grad and p.name not in off)

    @property
    def steps_seen(self) -> int:
        """Steps since the first frame of this session (0 before any)."""
        return 0 if self.first_step < 0 else self.last_step - self.first_step

    def latest(self, name: str) -> list[float] | None:
        """Latest values of the per-parameter column ``name``, from a cheap or a full step."""
        got = self.columns.get(name)
        return got if got is not None else self.full_columns.get(name)

    def fresh(self, name: str) -> list[float] | None:
        """The per-parameter column ``name`` if the latest stats frame carried it, else None."""
        if name in self.columns:
            return self.columns[name]
        if self.stats is not None and self.full_step == self.stats.step:
            return self.full_columns.get(name)
        return None

    def typical_interval(self) -> float | None:
        """Median seconds between frames, or None before there are a few."""
        if len(self.intervals) < 3:
            return None
        ordered = sorted(self.intervals)
        return ordered[len(ordered) // 2]


@dataclass
class RunState:
    """All ranks of one run."""

    name: str
    ranks: dict[int, RankState] = field(default_factory=dict)

    @property
    def ended(self) -> bool:
        return bool(self.ranks) and all(r.ended for r in self.ranks.values())

    @property
    def last_seen(self) -> float:
        return max((r.last_seen for r in self.ranks.values()), default=0.0)


class Fleet:
    """Every run the collector has heard from, updated frame by frame (one ingest thread)."""

    def __init__(self) -> None:
        self.runs: dict[str, RunState] = {}
        self._sessions: dict[str, RankState] = {}

    def rank(self, run: str, rank: int) -> RankState | None:
        state = self.runs.get(run)
        return None if state is None else state.ranks.get(rank)

    def apply(self, frame: Frame, now: float | None = None) -> RankState:
        """Fold one decoded frame into the state; raise WireError when it cannot be placed."""
        now = time.time() if now is None else now
        if isinstance(frame, Hello):
            return self._hello(frame, now)
        state = self._sessions.get(frame.session)
        if state is None or state.run != frame.run or state.rank != frame.rank:
            raise WireError(
                "no_hello",
                f"{frame.run}/{frame.rank} session {frame.session} sent before its hello",
            )
        if isinstance(frame, Stats):
            check_shape(state.hello, frame)
            self._stats(state, frame)
        elif isinstance(frame, Bye):
            state.ended = True
        if not isinstance(frame, Bye):
            state.intervals.append(now - state.last_seen)
        state.last_seen = now
        state.frames += 1
        if isinstance(frame, (Stats, Heartbeat, Bye)):
            state.last_step = max(state.last_step, frame.step)
            if state.first_step < 0:
                state.first_step = frame.step
            state.dropped = max(state.dropped, frame.dropped)
        return state

    def _hello(self, hello: Hello, now: float) -> RankState:
        run = self.runs.setdefault(hello.run, RunState(hello.run))
        old = run.ranks.get(hello.rank)
        if old is not None and old.hello.session == hello.session:
            # A reconnect, or the table re-announced (a dtype or requires_grad changed): the
            # same process, so keep what we know; columns follow the new table.
            names = _tracked_names(hello)
            if names != old.names:
                trainable = {p.name for p in hello.params if p.requires_grad}
                for name in old.names:
                    if name not in trainable:
                        old.untracked.setdefault(name, old.last_step)
                for name in names:
                    old.untracked.pop(name, None)
                old.names, old.columns, old.full_columns = names, {}, {}
                old.full_step = -1
            old.hello = hello
            old.last_seen = now
            old.ended = False
            old.frames += 1
            return old
        if old is not None:
            self._sessions.pop(old.hello.session, None)
        names = _tracked_names(hello)
        state = RankState(hello.run, hello.rank, hello, now, now, names=names, frames=1)
        run.ranks[hello.rank] = state
        self._sessions[hello.session] = state
        return state

    @staticmethod
    def _stats(state: RankState, stats: Stats) -> None:
        state.stats = stats
        state.columns = unpack_columns(state.hello.fields, stats.rows)
        if stats.full:
            state.full_columns = unpack_columns(state.hello.full_fields, stats.full)
            state.full_step = stats.step
            state.full_metrics = dict(stats.metrics)

    def forget(self, run: str) -> None:
        """Drop a run (after its grace period) and its sessions."""
        state = self.runs.pop(run, None)
        if state is not None:
            for rank in state.ranks.values():
                self._sessions.pop(rank.hello.session, None)


def _tracked_names(hello: Hello) -> tuple[str, ...]:
    """Names of the parameters a hello's stats rows carry, in row order."""
    return tuple(hello.params[i].name for i in hello.tracked)
