"""The fleet: every run the collector holds, updated frame by frame, and what it admits
(hellos, sessions, duplicates, the ``max_runs``/``max_ranks``/``max_params`` limits)."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING

from gradwatch.wire import Bye, Frame, Heartbeat, Hello, Stats, WireError, check_shape

from .params import ParamTable, unpack
from .state import Duplicate, RankState, RunState

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
            table = ParamTable(hello)
            names = table.names
            if names != old.names:
                trainable = {p.name for p in hello.params if p.requires_grad}
                for name in old.names:
                    if name not in trainable:
                        old.untracked.setdefault(name, old.last_step)
                for name in names:
                    old.untracked.pop(name, None)
                old.names, old.columns, old.full_columns = names, {}, {}
                old.full_step = -1
            old.hello, old._table = hello, table
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
        table = ParamTable(hello)
        state = RankState(
            hello.run, hello.rank, hello, now, now, names=table.names, frames=1, progress_at=now
        )
        state._table = table
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
        state.columns = unpack(state.hello.fields, stats.rows)
        if stats.full:
            state.full_columns = unpack(state.hello.full_fields, stats.full)
            state.full_step = stats.step
            state.full_metrics = dict(stats.metrics)
        state.derived = {}  # after the columns: see ranking.summary

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
