"""Admission rules: duplicate_rank (two processes for one run and rank), collector_limit (the
collector refused something at one of its limits)."""

from __future__ import annotations

from dataclasses import dataclass

from ..health import LIMITS, IngestHealth
from ..state import RankState
from .base import Finding, Rule, RuleSettings


@dataclass(frozen=True)
class DuplicateSettings(RuleSettings):
    recent_seconds: float = 60.0
    """The alert holds while the refused process sent something within this many seconds."""


class DuplicateRank(Rule[DuplicateSettings, None]):
    """A second process sent a hello for a run and rank whose session is live: it is refused.

    Usually a reused run name (``GRADWATCH_RUN``), a launcher that started a job twice, or two
    jobs with the same name. The first session keeps being monitored and the second one's
    frames are dropped (counted as ``duplicate_rank``); it takes over only once the first said
    ``bye`` or went silent (``trainer_silent``). The message names both hosts and pids. What to
    do: give every job a unique run name, or stop the duplicate process.
    """

    name = "duplicate_rank"
    severity = "error"
    action = "give every job a unique run name (GRADWATCH_RUN) or stop the duplicate process"
    settings_type = DuplicateSettings

    def new_memory(self) -> None:
        return None

    def tick(self, rank: RankState, memory: None, now: float) -> list[Finding] | None:
        dup = rank.duplicate
        if dup is None or now - dup.last_seen > self.settings.recent_seconds:
            return []
        live = rank.hello
        return [
            self.finding(
                f"rank {rank.rank} of run {rank.run} is sent by two processes: {live.host} "
                f"pid {live.pid} (session {live.session}, monitored) and {dup.host} pid "
                f"{dup.pid} (session {dup.session}, refused: {dup.frames} frame(s))",
                value=float(dup.frames),
                threshold=0.0,
            )
        ]


@dataclass(frozen=True)
class LimitSettings(RuleSettings):
    recent_seconds: float = 300.0
    """The alert holds while the limit refused something within this many seconds."""


class CollectorLimit(Rule[LimitSettings, None]):
    """The collector refused something at one of its limits, so something goes unmonitored.

    ``max_runs``, ``max_ranks``, ``max_params``: hellos (and the frames that follow) refused;
    ``max_open_alerts``: new alerts of a run not raised. One alert per limit, raised by the
    collector itself: run ``""`` and rank ``-1``, the limit's name as its parameter; the
    message says how many were refused and the latest one. What to do: if the load is
    legitimate, raise the limit (``--max-runs`` ...) and restart the collector (agents
    reconnect and are admitted); otherwise find and stop the sender named in the message.
    """

    name = "collector_limit"
    severity = "error"
    action = (
        "raise the limit (--max-runs, --max-ranks, --max-params, --max-open-alerts) and restart "
        "the collector if the load is legitimate; otherwise stop the sender it names"
    )
    settings_type = LimitSettings
    collector_settings = LIMITS

    def new_memory(self) -> None:
        return None

    def tick_collector(self, health: IngestHealth, memory: None, now: float) -> list[Finding]:
        found = []
        for limit in LIMITS:
            hit = health.last_hit.get(limit)
            if hit is None or now - hit.at > self.settings.recent_seconds:
                continue
            count = health.limit_hits[limit]
            found.append(
                self.finding(
                    f"{limit} ({hit.value}) reached: {count} refused so far; latest: {hit.detail}",
                    parameter=limit,
                    value=float(count),
                    threshold=float(hit.value),
                )
            )
        return found
