"""Job-level liveness rules: rank_stalled (alive, no progress, and who holds the job up),
rank_crashed (how a rank ended, and who went first), rank_missing (ranks that never said hello).

All three judge every rank of a run together (``scope = "run"``) and name each affected rank
in a finding; the book folds them into one alert per run whose ``rank`` is the origin.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from ..rank_ranges import compact_ranks
from ..stacks import innermost, place, short, waiting_in_collective
from ..state import RankState, RunState
from .base import Finding, Rule, RuleSettings


@dataclass(frozen=True)
class StalledSettings(RuleSettings):
    clear_checks: int = 1
    cooldown_seconds: float = 0.0
    seconds: float = 300.0
    """No optimizer step for this long, outside declared phases, while heartbeats arrive."""
    phase_seconds: float = 1800.0
    """A declared phase (``eval``, ``checkpoint``) lasting longer than this is a stall too."""
    frames: int = 3
    """Innermost stack frames the message names."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.seconds <= 0 or self.phase_seconds <= 0 or self.frames < 1:
            raise ValueError("seconds and phase_seconds must be positive, frames at least 1")


class RankStalled(Rule[StalledSettings, None]):
    """A rank is alive (its heartbeats arrive) but no optimizer step has completed for
    ``seconds`` outside a declared phase, or a declared phase has lasted ``phase_seconds``.

    One alert per run. Its ``rank`` is the culprit: ranks are grouped by (phase, last step,
    innermost frame); ranks waiting in a collective (frames in torch.distributed or
    torch.nn.parallel, or ``backward`` inside torch under DDP) are followers, and the rank that
    is elsewhere, or behind, holds the job up. The message gives its phase, time stuck, step,
    host, pid and innermost frames (heartbeats carry the stack once the agent's
    ``stall_seconds`` pass), and where the followers wait. What to do: look at the culprit's
    frames (``py-spy dump --pid``) first: a data loader, a filesystem, a lock, a rank that
    skipped a collective.
    """

    name = "rank_stalled"
    severity = "error"
    action = "inspect the culprit rank's frames (py-spy dump --pid PID): data loader, I/O, locks"
    settings_type = StalledSettings
    scope = "run"

    def new_memory(self) -> None:
        return None

    def stuck(self, rank: RankState, now: float) -> float:
        """Seconds the rank has been stuck: in its declared phase, else without a step."""
        return rank.in_phase(now) if rank.declared else rank.stalled_for(now)

    def limit(self, rank: RankState) -> float:
        return self.settings.phase_seconds if rank.declared else self.settings.seconds

    def check_run(self, run: RunState, memory: None, now: float) -> list[Finding] | None:
        live = [s for s in run.ranks.values() if not s.ended and s.beating(now)]
        stalled = [s for s in live if self.stuck(s, now) > self.limit(s)]
        if not stalled:
            return []
        declared = [s for s in live if s.declared and s not in stalled]
        culprit = find_culprit(stalled, declared)
        message = self._message(culprit, stalled, now)
        gone = [s for s in run.ranks.values() if _gone(s, now)]
        if culprit is None and gone:
            message += "; they may wait for " + ", ".join(
                f"rank {s.rank} ({'crashed' if s.ended else 'silent'})" for s in gone[:5]
            )
        involved = stalled + ([culprit] if culprit is not None and culprit not in stalled else [])
        return [
            self.finding(
                message,
                value=self.stuck(s, now),
                threshold=self.limit(s),
                rank=s.rank,
                origin=s is culprit,
            )
            for s in sorted(involved, key=lambda s: s.rank)
        ]

    def _where(self, s: RankState, now: float) -> str:
        phase = f"declared phase {s.phase}" if s.declared else s.phase
        return (
            f"stuck in {phase} for {self.stuck(s, now):.0f} s at step {s.last_step + 1} (last "
            f"completed {s.last_step}), host {s.hello.host} pid {s.hello.pid}: "
            + (
                innermost(s.stack, self.settings.frames)
                or "no stack yet (heartbeats carry it after the agent's stall_seconds)"
            )
        )

    def _message(self, culprit: RankState | None, stalled: list[RankState], now: float) -> str:
        if culprit is None:
            first = min(stalled, key=lambda s: s.rank)
            ranks = compact_ranks(s.rank for s in stalled)
            text = f"ranks {ranks} " if len(stalled) > 1 else f"rank {first.rank} "
            text += self._where(first, now)
            if len(stalled) > 1:
                text += "; no rank stands out: all wait alike (a collective that never completes?)"
            return text
        text = f"rank {culprit.rank} {self._where(culprit, now)}"
        followers = [s for s in stalled if s is not culprit]
        if followers:
            (phase, _, frame), _ = Counter(place(s) for s in followers).most_common(1)[0]
            verb = "wait" if len(followers) > 1 else "waits"
            text += f"; {_ranks(s.rank for s in followers)} {verb} in {phase or 'an unknown phase'}"
            text += f" ({frame})" if frame else ""
        return text


def _gone(rank: RankState, now: float) -> bool:
    """The rank crashed, or its heartbeats stopped without a bye."""
    if rank.ended:
        return rank.bye is not None and rank.bye.reason == "error"
    return rank.heartbeats and not rank.beating(now)


def _ranks(ranks: Iterable[int]) -> str:
    listed = sorted(ranks)
    return f"rank {listed[0]}" if len(listed) == 1 else f"ranks {compact_ranks(listed)}"


def find_culprit(stalled: list[RankState], declared: list[RankState]) -> RankState | None:
    """The rank that holds the others up, or None when none stands out.

    Candidates are the ranks not waiting in a collective (stalled ones, and ranks in a
    declared phase the others wait for); the one behind (lowest last step) wins. When every
    rank waits, one behind the others, or the only rank in a different place among three or
    more, is the culprit."""
    everyone = stalled + declared
    if len(everyone) == 1:
        return everyone[0]
    candidates = [s for s in everyone if not waiting_in_collective(s)]
    places = Counter(place(s) for s in everyone)
    if candidates and not (len(candidates) == len(everyone) and len(places) == 1):
        return min(candidates, key=lambda s: (s.last_step, s.rank))
    if len({s.last_step for s in everyone}) > 1:
        return min(everyone, key=lambda s: (s.last_step, s.rank))
    odd = [s for s in everyone if places[place(s)] == 1]
    if len(everyone) >= 3 and len(odd) == 1:
        return odd[0]
    return None


@dataclass(frozen=True)
class CrashedSettings(RuleSettings):
    for_checks: int = 0
    clear_checks: int = 1
    frames: int = 3
    """Innermost traceback frames the message names."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.frames < 1:
            raise ValueError("frames must be at least 1")


_OOM = re.compile(r"out of memory|can't allocate memory|cannot allocate memory", re.I)
_SIGNALS = {2: "SIGINT", 9: "SIGKILL", 15: "SIGTERM"}


def error_kind(rank: RankState) -> str:
    """The bye's error kind, recognising out-of-memory messages the agent called exceptions
    (an older agent, or the CPU allocator's ``can't allocate memory``)."""
    bye = rank.bye
    if bye is None:
        return ""
    if bye.error_kind != "oom" and _OOM.search(f"{bye.error_type} {bye.error_message}"):
        return "oom"
    return bye.error_kind or "exception"


class RankCrashed(Rule[CrashedSettings, None]):
    """A rank ended with an uncaught exception (its ``bye`` says ``error``).

    The message gives the exception type, its message (cut) and the innermost frames of its
    traceback, and names out-of-memory errors and distributed ones (NCCL/gloo failures,
    collective timeouts) as such. One alert per run: its ``rank`` is the first rank to crash
    (a distributed error usually follows another rank's failure, so a rank with any other error
    goes first); ranks that crashed or were terminated (SIGTERM) after it are listed as
    followers. A job only terminated by a signal is not a crash. What to do: read the origin's
    traceback; for OOM lower the micro-batch or enable activation checkpointing; for
    distributed errors look at the rank that failed first.
    """

    name = "rank_crashed"
    severity = "critical"
    action = "read the first rank's traceback; OOM: smaller micro-batch or checkpointing"
    settings_type = CrashedSettings
    scope = "run"

    def new_memory(self) -> None:
        return None

    def check_run(self, run: RunState, memory: None, now: float) -> list[Finding] | None:
        ended = [s for s in run.ranks.values() if s.bye is not None]
        crashed = [s for s in ended if s.bye is not None and s.bye.reason == "error"]
        if not crashed:
            return []
        # The bye's arrival orders the crashes; a rank's own error before a collective's.
        first = min(crashed, key=lambda s: (error_kind(s) == "distributed", s.last_seen, s.rank))
        followers = [s for s in ended if s is not first]
        message = self._describe(first)
        if followers:
            message += "; after it: " + ", ".join(self._follower(s) for s in followers)
        running = sorted(run.running)
        if error_kind(first) == "distributed" and running:
            message += (
                f"; no bye from {_ranks(running)}: a peer that died without one (killed, "
                "segfault, node lost) fails the others' collectives first (see trainer_silent)"
            )
        return [
            self.finding(message, value=float(len(crashed)), rank=s.rank, origin=s is first)
            for s in sorted([first, *followers], key=lambda s: s.rank)
        ]

    def _describe(self, s: RankState) -> str:
        bye = s.bye
        assert bye is not None
        kind = error_kind(s)
        what = {"oom": "ran out of memory", "distributed": "failed in a collective"}.get(
            kind, "crashed"
        )
        frames = innermost(bye.stack, self.settings.frames)
        error = bye.error_type or "an exception"
        text = bye.error_message if len(bye.error_message) <= 300 else bye.error_message[:299]
        return (
            f"rank {s.rank} {what} at step {s.last_step + 1} (host {s.hello.host} pid "
            f"{s.hello.pid}): {error}: {text}" + (f" at {frames}" if frames else "")
        )

    @staticmethod
    def _follower(s: RankState) -> str:
        bye = s.bye
        assert bye is not None
        if bye.reason == "terminated":
            return f"rank {s.rank} terminated ({_SIGNALS.get(bye.signal, f'signal {bye.signal}')})"
        if bye.reason == "error":
            where = f" at {short(bye.stack[0])}" if bye.stack else ""
            return f"rank {s.rank} {error_kind(s)} error {bye.error_type}{where}"
        return f"rank {s.rank} closed"


@dataclass(frozen=True)
class MissingSettings(RuleSettings):
    clear_checks: int = 1
    cooldown_seconds: float = 0.0
    seconds: float = 120.0
    """Ranks that have not said hello this long after the run's first rank did are missing."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.seconds < 0:
            raise ValueError("seconds must not be negative")


class RankMissing(Rule[MissingSettings, None]):
    """The hellos give the world size N, but fewer than N ranks have said hello ``seconds``
    after the first one did: some ranks never reached the collector.

    One alert per run naming the missing ranks. The rank may not run gradwatch (``watch()`` only
    on rank 0?), may point at another endpoint (``GRADWATCH_ENDPOINT``), or a firewall drops its
    frames; or the rank never started. What to do: check the missing ranks' logs for gradwatch's
    "no collector reachable" warning and their endpoint.
    """

    name = "rank_missing"
    severity = "error"
    action = "check the missing ranks run watch() and reach the collector (GRADWATCH_ENDPOINT)"
    settings_type = MissingSettings
    scope = "run"

    def new_memory(self) -> None:
        return None

    def check_run(self, run: RunState, memory: None, now: float) -> list[Finding] | None:
        size = run.world_size
        if size <= 1 or now - run.first_seen < self.settings.seconds or run.ended:
            return []
        missing = [r for r in range(size) if r not in run.ranks]
        if not missing:
            return []
        hosts = sorted({s.hello.host for s in run.ranks.values()})
        message = (
            f"{len(missing)} of {size} ranks never said hello {now - run.first_seen:.0f} s after "
            f"the first did: {_ranks(missing)} (seen: {_ranks(run.ranks)} on "
            f"{', '.join(hosts[:5])}{' …' if len(hosts) > 5 else ''})"
        )
        return [
            self.finding(message, value=float(len(missing)), threshold=0.0, rank=r) for r in missing
        ]
