"""Per-run, per-rank state built from decoded frames (by the fleet, fleet.py): the latest
statistics by name, what each rank is doing (phase, last step, how it ended), and the recent
steps of every rank side by side for cross-rank comparisons."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from gradwatch.wire import Bye, Hello, Stats
from gradwatch.wire.metrics import STEP_PHASES, phase_seconds

from .params import Floats, ParamTable


@dataclass
class Duplicate:
    """Another process that sent a hello for a run and rank whose session was live."""

    host: str
    pid: int
    session: str
    first_seen: float
    last_seen: float
    """Collector wall clock at its latest (refused) frame."""
    frames: int = 1


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
    columns: dict[str, Floats] = field(default_factory=dict)
    """Latest cheap per-parameter columns (``wire.CHEAP_FIELDS`` names), tracked order."""
    full_columns: dict[str, Floats] = field(default_factory=dict)
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
    memory: dict[str, Any] = field(default_factory=dict)
    """Each rule's memory of this session, by rule name (owned by the engine)."""
    duplicate: Duplicate | None = None
    """The latest other process refused for this run and rank while this session was live."""
    progress_at: float = 0.0
    """Collector wall clock when ``last_step`` last rose (or the session's first frame)."""
    phase: str = ""
    """The training thread's phase in the latest heartbeat ("" before one, or from an agent
    that does not send phases)."""
    phase_seconds: float = 0.0
    """Seconds it had spent in ``phase`` when that heartbeat was sent."""
    declared: bool = False
    """``phase`` was declared (``eval``, ``checkpoint``): a pause the user expects."""
    stack: tuple[str, ...] = ()
    """The training thread's stack in the latest heartbeat (sent only while stalled),
    innermost first."""
    beat_at: float = 0.0
    """Collector wall clock of the latest heartbeat (0: none yet)."""
    beat_every: float = 0.0
    """Seconds between the two latest heartbeats (0: fewer than two yet)."""
    declared_at: float = 0.0
    """Collector wall clock of the latest heartbeat in a declared phase (0: none yet): time in
    a declared phase is not time stalled."""
    bye: Bye | None = None
    """The bye, once it arrived: how the rank ended (reason, error, signal)."""
    judged_at: float = 0.0
    """Frame time of the latest stats frame every rule judged (load shedding skips others)."""
    derived: dict[object, object] = field(default_factory=dict)
    """What readers derive from the latest frame (the exporter's parameter summary), kept
    until the next stats frame replaces it."""
    _table: ParamTable | None = field(default=None, repr=False, compare=False)

    @property
    def table(self) -> ParamTable:
        """What the current hello says about the tracked parameters (derived once per hello)."""
        table = self._table
        if table is None or table.hello is not self.hello:
            table = self._table = ParamTable(self.hello)
        return table

    @property
    def frozen_by_design(self) -> tuple[str, ...]:
        """Parameters the user froze on purpose (requires_grad=False): never a problem."""
        off = self.untracked
        return tuple(p.name for p in self.hello.params if not p.requires_grad and p.name not in off)

    @property
    def steps_seen(self) -> int:
        """Steps since the first frame of this session (0 before any)."""
        return 0 if self.first_step < 0 else self.last_step - self.first_step

    def latest(self, name: str) -> Floats | None:
        """Latest values of the per-parameter column ``name``, from a cheap or a full step."""
        got = self.columns.get(name)
        return got if got is not None else self.full_columns.get(name)

    def fresh(self, name: str) -> Floats | None:
        """The per-parameter column ``name`` if the latest stats frame carried it, else None."""
        if name in self.columns:
            return self.columns[name]
        if self.stats is not None and self.full_step == self.stats.step:
            return self.full_columns.get(name)
        return None

    @property
    def heartbeats(self) -> bool:
        """The agent sends heartbeats with phases from its own thread (newer agents, which also
        time each step's phases): silence then means the process is gone, and a rank can be
        alive but stalled."""
        stats = self.stats
        return bool(self.phase) or (stats is not None and _TIMED in stats.metrics)

    def in_phase(self, now: float) -> float:
        """Seconds in ``phase`` by now (estimated from the latest heartbeat)."""
        return self.phase_seconds + max(0.0, now - self.beat_at)

    def stalled_for(self, now: float) -> float:
        """Seconds without a completed step, outside declared phases."""
        return now - max(self.progress_at, self.declared_at)

    def beating(self, now: float) -> bool:
        """Heartbeats still arrive: the latest is at most three heartbeat intervals old."""
        return self.heartbeats and now - self.beat_at <= 3 * max(self.beat_every, 1.0)

    def typical_interval(self) -> float | None:
        """Median seconds between frames, or None before there are a few."""
        if len(self.intervals) < 3:
            return None
        ordered = sorted(self.intervals)
        return ordered[len(ordered) // 2]


_TIMED = phase_seconds(STEP_PHASES[0])
"""A metric only agents with phase heartbeats send."""

StepRanks = dict[int, tuple[Hello, Stats]]
"""One step as each rank reported it: its hello (the table its rows follow) and stats frame."""


class StepBuffer:
    """The latest steps' stats frames of every rank of a run, held until each rank that is
    still running has reported the step; then the step is handed out once, for cross-rank
    rules. A step some rank never reports (a dropped frame, a dead rank) is handed out with the
    ranks it has once ``depth`` newer steps are waiting. Frames of steps already handed out are
    ignored."""

    def __init__(self, depth: int = 8) -> None:
        self.depth = depth
        self.pending: dict[int, StepRanks] = {}
        self.done = -1
        """The latest step handed out."""

    def add(
        self, hello: Hello, stats: Stats, expected: frozenset[int]
    ) -> list[tuple[int, StepRanks]]:
        """Hold ``stats`` of rank ``stats.rank``; return the steps now complete (or given up),
        oldest first. ``expected``: the ranks still running."""
        if stats.step <= self.done:
            return []
        self.pending.setdefault(stats.step, {})[stats.rank] = (hello, stats)
        return self.ready(expected)

    def ready(self, expected: frozenset[int]) -> list[tuple[int, StepRanks]]:
        """The steps every rank of ``expected`` has reported, and those given up; they leave
        the buffer, and every older step with them."""
        out: list[tuple[int, StepRanks]] = []
        for step in sorted(self.pending):
            ranks = self.pending[step]
            complete = len(ranks) >= len(expected) and expected <= ranks.keys()
            if complete or len(self.pending) > self.depth:
                out.append((step, self.pending.pop(step)))
                self.done = step
                for older in [s for s in self.pending if s < step]:
                    del self.pending[older]
        return out


@dataclass
class RunState:
    """All ranks of one run."""

    name: str
    ranks: dict[int, RankState] = field(default_factory=dict)
    last_seen: float = 0.0
    """Collector wall clock at the latest frame of any of its ranks (kept by the fleet)."""
    first_seen: float = 0.0
    """Collector wall clock of the run's first hello."""
    memory: dict[str, Any] = field(default_factory=dict)
    """Run-level rules' memory, by rule name."""
    steps: StepBuffer = field(default_factory=StepBuffer)
    """Recent steps of every rank side by side."""
    changes: int = 0
    """Bumped whenever a rank joins, restarts or ends (``running`` is cached between)."""
    _running: tuple[int, frozenset[int]] = (-1, frozenset())

    @property
    def ended(self) -> bool:
        return bool(self.ranks) and all(r.ended for r in self.ranks.values())

    @property
    def world_size(self) -> int:
        """The largest world size any rank's hello gave (0 before any)."""
        return max((r.hello.world_size for r in self.ranks.values()), default=0)

    @property
    def running(self) -> frozenset[int]:
        """Ranks that have not said bye."""
        if self._running[0] != self.changes:
            ranks = frozenset(r for r, s in self.ranks.items() if not s.ended)
            self._running = (self.changes, ranks)
        return self._running[1]
