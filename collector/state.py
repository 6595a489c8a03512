"""Per-run, per-rank state built from decoded frames: the latest statistics by name, what
each rank is doing (phase, last step, how it ended), and the recent steps of every rank side
by side for cross-rank comparisons."""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

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
from gradwatch.wire.metrics import STEP_PHASES, phase_seconds

if TYPE_CHECKING:
    from .run_record import RunRecord

REFUSED_SESSIONS = 4096
"""Sessions whose hello was refused, remembered so that their later frames are counted under
the same reason (least recently heard from forgotten first)."""
WAITING_HELLOS = 16
"""Hellos of refused duplicates kept so that one can take over when the live session ends."""
DEFAULT_SILENCE_SECONDS = 60.0


class Refused(WireError):
    """A well-formed frame the collector will not take: a duplicate rank or a limit (the reason
    names which: ``duplicate_rank``, ``max_runs``, ``max_ranks``, ``max_params``)."""

    def __init__(self, reason: str, detail: str, limit: int = 0) -> None:
        super().__init__(reason, detail)
        self.limit = limit
        """The limit's setting, for limit reasons."""


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


class Fleet:
    """Every run the collector holds in memory, updated frame by frame (one ingest thread).

    Admission: a hello for a (run, rank) whose session is live (no ``bye``, not silent for
    longer than ``silence(rank)`` seconds) is refused as ``duplicate_rank`` and recorded on the
    live rank; the refused process takes over on its next frame once the live one ended or went
    silent. ``max_runs`` (runs held, ended ones evicted first), ``max_ranks`` (ranks held, all
    runs) and ``max_params`` (parameters per hello) refuse hellos beyond them (None: no limit).
    ``recall(run, rank)`` returns the stored record of a rank, so that a collector restart keeps
    its ``first_seen`` and counts; ``on_forget(run)`` runs before a run leaves memory.
    """

    def __init__(
        self,
        *,
        max_runs: int | None = None,
        max_ranks: int | None = None,
        max_params: int | None = None,
        silence: Callable[[RankState], float] | None = None,
        recall: Callable[[str, int], RunRecord | None] | None = None,
    ) -> None:
        self.runs: dict[str, RunState] = {}
        self.max_runs, self.max_ranks, self.max_params = max_runs, max_ranks, max_params
        self.silence = silence or (lambda rank: DEFAULT_SILENCE_SECONDS)
        self.recall = recall
        self.on_forget: Callable[[RunState], None] | None = None
        self.ranks_held = 0
        self._sessions: dict[str, RankState] = {}
        self._refused: OrderedDict[str, str] = OrderedDict()
        self._waiting: OrderedDict[str, Hello] = OrderedDict()

    def rank(self, run: str, rank: int) -> RankState | None:
        state = self.runs.get(run)
        return None if state is None else state.ranks.get(rank)

    def live(self, state: RankState, now: float) -> bool:
        """The session still counts as running: no bye, and not silent for too long."""
        return not state.ended and now - state.last_seen <= self.silence(state)

    def apply(self, frame: Frame, now: float | None = None) -> RankState:
        """Fold one decoded frame into the state; raise WireError (or :class:`Refused`) when it
        cannot be placed."""
        now = time.time() if now is None else now
        if isinstance(frame, Hello):
            return self._hello(frame, now)
        state = self._sessions.get(frame.session)
        if state is None or state.run != frame.run or state.rank != frame.rank:
            state = self._unknown(frame, now)
        if isinstance(frame, Stats):
            check_shape(state.hello, frame)
            self._stats(state, frame)
        elif isinstance(frame, Heartbeat):
            self._heartbeat(state, frame, now)
        elif isinstance(frame, Bye):
            state.ended = True
            state.bye = frame
            self._changed(state)
        if not isinstance(frame, Bye):
            state.intervals.append(now - state.last_seen)
        self._seen(state, now)
        state.frames += 1
        if frame.step > state.last_step:
            state.last_step = frame.step
            state.progress_at = now
        if state.first_step < 0:
            state.first_step = frame.step
        state.dropped = max(state.dropped, frame.dropped)
        return state

    @staticmethod
    def _heartbeat(state: RankState, beat: Heartbeat, now: float) -> None:
        if state.beat_at:
            state.beat_every = now - state.beat_at
        state.phase, state.phase_seconds = beat.phase, beat.phase_seconds
        state.declared, state.stack, state.beat_at = beat.declared, beat.stack, now
        if beat.declared:
            state.declared_at = now

    def _changed(self, state: RankState) -> None:
        """A rank of ``state``'s run joined, restarted or ended."""
        run = self.runs.get(state.run)
        if run is not None:
            run.changes += 1

    # ------------------------------------------------------------------------ admission

    def _unknown(self, frame: Stats | Heartbeat | Bye, now: float) -> RankState:
        """A frame of a session without an accepted hello: a refused session's (counted under
        its reason, or taking over a rank that is free now), else ``no_hello``."""
        reason = self._refused.get(frame.session)
        if reason is None:
            raise WireError(
                "no_hello",
                f"{frame.run}/{frame.rank} session {frame.session} sent before its hello",
            )
        self._refused.move_to_end(frame.session)
        holder = self.rank(frame.run, frame.rank)
        hello = self._waiting.get(frame.session)
        if reason == "duplicate_rank" and hello is not None:
            if holder is None or not self.live(holder, now):
                return self._hello(hello, now)  # the live session ended: this one takes over
            dup = holder.duplicate
            if dup is not None and dup.session == frame.session:
                dup.last_seen, dup.frames = now, dup.frames + 1
        raise Refused(reason, f"{frame.run}/{frame.rank}: session {frame.session} was refused")

    def _refuse(self, hello: Hello, reason: str, keep: bool = False) -> None:
        self._refused[hello.session] = reason
        self._refused.move_to_end(hello.session)
        while len(self._refused) > REFUSED_SESSIONS:
            self._refused.popitem(last=False)
        if keep:
            self._waiting[hello.session] = hello
            self._waiting.move_to_end(hello.session)
            while len(self._waiting) > WAITING_HELLOS:
                self._waiting.popitem(last=False)

    def _hello(self, hello: Hello, now: float) -> RankState:
        who = f"{hello.run}/{hello.rank} from {hello.host} pid {hello.pid}"
        if self.max_params is not None and len(hello.params) > self.max_params:
            self._refuse(hello, "max_params")
            raise Refused(
                "max_params",
                f"{who}: {len(hello.params)} parameters > max_params {self.max_params}",
                self.max_params,
            )
        run = self.runs.get(hello.run)
        old = None if run is None else run.ranks.get(hello.rank)
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
            self._seen(old, now)
            old.ended, old.bye = False, None
            old.frames += 1
            self._changed(old)
            return old
        if old is not None and self.live(old, now):
            self._duplicate(old, hello, now)
            self._refuse(hello, "duplicate_rank", keep=True)
            live = old.hello
            raise Refused(
                "duplicate_rank",
                f"{who}: rank is live in session {live.session} ({live.host} pid {live.pid})",
            )
        if old is None and self.max_ranks is not None and self.ranks_held >= self.max_ranks:
            self._make_room("max_ranks", self.max_ranks, hello, who)
        if run is None and self.max_runs is not None and len(self.runs) >= self.max_runs:
            self._make_room("max_runs", self.max_runs, hello, who)
        if run is None:
            run = self.runs[hello.run] = RunState(hello.run, first_seen=now)
        run.changes += 1
        if old is None:
            self.ranks_held += 1
        else:
            self._sessions.pop(old.hello.session, None)
        self._refused.pop(hello.session, None)
        self._waiting.pop(hello.session, None)
        state = self._new_rank(hello, now, old is None)
        run.ranks[hello.rank] = state
        run.last_seen = max(run.last_seen, now)
        self._sessions[hello.session] = state
        return state

    def _new_rank(self, hello: Hello, now: float, fresh: bool) -> RankState:
        names = _tracked_names(hello)
        state = RankState(
            hello.run, hello.rank, hello, now, now, names=names, frames=1, progress_at=now
        )
        previous = self._recall(hello.run, hello.rank) if fresh else None
        if previous is not None and previous.session == hello.session:
            # The collector restarted under a running session: continue its record.
            state.first_seen = previous.first_seen
            state.frames = previous.frames + 1
            state.dropped = previous.dropped
            state.last_step = previous.last_step
        return state

    def _recall(self, run: str, rank: int) -> RunRecord | None:
        if self.recall is None:
            return None
        try:
            return self.recall(run, rank)
        except Exception:  # a failing store must not stop admission; it is reported elsewhere
            return None

    @staticmethod
    def _duplicate(old: RankState, hello: Hello, now: float) -> None:
        dup = old.duplicate
        if dup is not None and dup.session == hello.session:
            dup.last_seen, dup.frames = now, dup.frames + 1
        else:
            old.duplicate = Duplicate(hello.host, hello.pid, hello.session, now, now)

    def _make_room(self, limit: str, value: int, hello: Hello, who: str) -> None:
        """Evict the run that ended longest ago (not ``hello``'s own), or refuse ``hello``."""
        ended = [r for r in self.runs.values() if r.ended and r.name != hello.run]
        if not ended:
            self._refuse(hello, limit)
            held = len(self.runs) if limit == "max_runs" else self.ranks_held
            raise Refused(limit, f"{who}: {held} held, {limit} is {value}", value)
        self.forget(min(ended, key=lambda r: r.last_seen).name)
        if limit == "max_ranks" and self.ranks_held >= value:
            self._make_room(limit, value, hello, who)

    def _seen(self, state: RankState, now: float) -> None:
        state.last_seen = now
        run = self.runs.get(state.run)
        if run is not None and now > run.last_seen:
            run.last_seen = now

    @staticmethod
    def _stats(state: RankState, stats: Stats) -> None:
        state.stats = stats
        state.columns = unpack_columns(state.hello.fields, stats.rows)
        if stats.full:
            state.full_columns = unpack_columns(state.hello.full_fields, stats.full)
            state.full_step = stats.step
            state.full_metrics = dict(stats.metrics)

    def forget(self, run: str) -> None:
        """Drop a run and its sessions from memory (``on_forget`` first)."""
        state = self.runs.get(run)
        if state is None:
            return
        if self.on_forget is not None:
            self.on_forget(state)
        del self.runs[run]
        self.ranks_held -= len(state.ranks)
        for rank in state.ranks.values():
            self._sessions.pop(rank.hello.session, None)


def _tracked_names(hello: Hello) -> tuple[str, ...]:
    """Names of the parameters a hello's stats rows carry, in row order."""
    return tuple(hello.params[i].name for i in hello.tracked)
